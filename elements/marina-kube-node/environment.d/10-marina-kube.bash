# shellcheck shell=bash
# The repository that serves kubelet and kubeadm, as the part of an apt
# "deb" line after "deb": a URI and a suite, e.g.
#   DIB_MARINA_KUBE_REPO='https://mirror.example/kubernetes/v1.31/deb/ /'
# Required: there is no default these machines could reach.
export DIB_MARINA_KUBE_REPO=${DIB_MARINA_KUBE_REPO:-}
# A file on the build host with the repository's signing key (armored or
# binary); without it the repository must be a local file: one.
export DIB_MARINA_KUBE_REPO_KEY=${DIB_MARINA_KUBE_REPO_KEY:-}
# What to install from it, and hold at the installed version.
export DIB_MARINA_KUBE_PACKAGES=${DIB_MARINA_KUBE_PACKAGES:-kubelet kubeadm kubectl}
