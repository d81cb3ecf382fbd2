"""Marina's gateway agent: HAProxy kept in step with routes in etcd."""
