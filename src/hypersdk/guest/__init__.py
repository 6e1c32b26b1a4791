"""Guest-facing decisions: device models, interface names, what a guest carries (pure)."""
