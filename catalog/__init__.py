"""Marina's catalog: packages, environments, actions and tasks."""
