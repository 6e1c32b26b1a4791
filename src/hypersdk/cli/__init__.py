"""hyperctl: the command line for a running hypersdk daemon."""
