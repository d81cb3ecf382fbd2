"""A Kubernetes API server for tests: the official client and kubectl talk to it over HTTP.

`harness.KubeApi` runs it (with a Deployment controller, a scheduler, a
kubelet that runs pods through Marina's sandbox, and kube-proxy);
`fixtures` holds the pytest fixtures that start it once per session.
"""
