"""D-Bus: org.hypersdk.Daemon1 for desktop and local tools, and logind inhibitor locks."""
