"""Node bring-up by cloud-init, in the steps RKE and zke take.

Marina makes the cluster's certificate authorities once (kept in its etcd,
which only its own processes reach) and, for each server it creates, one
cloud-init document holding only what that server's role needs: masters get
the CAs and their keys (kubeadm signs with them) and run the etcd plane and
the control plane, workers get a kubelet certificate and join, gateways get
a client certificate of Marina's etcd and run HAProxy and `marina-gateway`.
The first master starts etcd and the control plane; every later master first
adds itself to etcd as a member, then runs the same planes. The network
plugin (`podnet.py` on every master and worker: each node's pod range from
kube-controller-manager, a bridge for it and routes to every other node's)
and the add-ons (DNS, metrics) are the last step.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)
POD_CIDR = "10.244.0.0/16"
"""Every node's pod range together (a /24 each, given by kube-controller-manager);
neutron lets it through every node's port (allowed address pairs)."""
NODE_CIDR_MASK = 24
SERVICE_CIDR = "10.96.0.0/12"
KUBERNETES_SERVICE_IP = "10.96.0.1"
AUTHORITIES = ("kubernetes", "etcd", "front-proxy")


@dataclass(frozen=True)
class Authority:
    cert: str
    """PEM certificate."""
    key: str
    """PEM PKCS#8 private key."""


@dataclass(frozen=True)
class ClusterPKI:
    """The cluster's three CAs and the service-account signing key, as PEM."""

    kubernetes: Authority
    etcd: Authority
    front_proxy: Authority
    service_account_key: str
    """The key that signs service-account tokens (its public half goes to the API server)."""

    def to_json(self) -> dict[str, str]:
        out = {"service_account_key": self.service_account_key}
        for name in AUTHORITIES:
            ca = self._ca(name)
            out[f"{name}_cert"], out[f"{name}_key"] = ca.cert, ca.key
        return out

    @classmethod
    def from_json(cls, data: dict[str, str]) -> ClusterPKI:
        k8s, etcd, proxy = (Authority(data[f"{n}_cert"], data[f"{n}_key"]) for n in AUTHORITIES)
        return cls(k8s, etcd, proxy, service_account_key=data["service_account_key"])

    def _ca(self, name: str) -> Authority:
        return {"kubernetes": self.kubernetes, "etcd": self.etcd, "front-proxy": self.front_proxy}[
            name
        ]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _authority(common: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


def make_cluster_pki() -> ClusterPKI:
    sa = ec.generate_private_key(ec.SECP256R1())
    return ClusterPKI(
        _authority("kubernetes-ca"),
        _authority("etcd-ca"),
        _authority("front-proxy-ca"),
        service_account_key=_pem_key(sa),
    )


def issue(
    ca: Authority,
    common: str,
    *,
    organization: str | None = None,
    server: bool = False,
    client: bool = False,
    names: Sequence[str] = (),
) -> Authority:
    """A leaf certificate of `ca`; `names` are its SANs (IP addresses or DNS names)."""
    ca_key = serialization.load_pem_private_key(ca.key.encode(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.encode())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if names:
        sans: list[x509.GeneralName] = []
        for name in dict.fromkeys(names):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Authority(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


@dataclass(frozen=True)
class NodePlan:
    """What one server's user data is rendered from."""

    cluster: str
    name: str
    role: str
    """`master`, `minion` or `gateway`."""
    address: str
    """The server's fixed address (its port is made before the server)."""
    api_address: str
    """The first master's fixed address: where the others reach the API and etcd."""
    public_addresses: Sequence[str] = ()
    """Floating IPs of this server (the API's on the first master, a gateway's own)."""
    masters: Sequence[tuple[str, str]] = ()
    """(name, address) of every master known when this one is made, the first first:
    etcd's members are those before this one in this list, and this one."""
    api_addresses: Sequence[str] = ()
    """Where clients reach the API besides the masters' own addresses (its floating IP):
    in every master's API server certificate."""

    @property
    def etcd_members(self) -> list[tuple[str, str]]:
        """(name, address) of the etcd members once this master has joined, first first."""
        names = [name for name, _ in self.masters]
        if self.name not in names:
            return [*self.masters, (self.name, self.address)]
        return list(self.masters[: names.index(self.name) + 1])


@dataclass(frozen=True)
class GatewayEtcd:
    """Marina's etcd as a gateway reaches it: its URL, CA and a client certificate."""

    url: str
    ca: str
    client: Authority


def _file(path: str, content: str, *, mode: str = "0600") -> dict[str, str]:
    return {"path": path, "content": content, "permissions": mode, "owner": "root:root"}


def _kubeconfig(cluster: str, server: str, ca: str, user: str, cred: Authority) -> str:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster,
                    "cluster": {"server": server, "certificate-authority-data": b64(ca)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(cred.cert),
                        "client-key-data": b64(cred.key),
                    },
                }
            ],
            "contexts": [{"name": user, "context": {"cluster": cluster, "user": user}}],
            "current-context": user,
        }
    )


PODNET = "/usr/local/lib/marina/podnet.py"


def _podnet_files(node_name: str, kubeconfig: str) -> tuple[list[dict[str, str]], list[str]]:
    """The network plugin on a master or worker: `podnet.py` as a service."""
    args = shlex.join(["--node", node_name, "--kubeconfig", kubeconfig, "--cluster-cidr", POD_CIDR])
    unit = (
        "[Unit]\n"
        "Description=Marina pod network: this node's pod range, routes to the others'\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart=/usr/bin/python3 {PODNET} {args}\n"
        "Restart=always\n"
        "RestartSec=10\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    source = (Path(__file__).parent / "podnet.py").read_text()
    files = [
        _file(PODNET, source, mode="0755"),
        _file("/etc/systemd/system/marina-podnet.service", unit, mode="0644"),
    ]
    return files, ["systemctl daemon-reload", "systemctl enable --now marina-podnet.service"]


def node_labels(cluster: str, node: str) -> str:
    """The labels by which the Kubernetes engine knows a Node as Marina's `node`
    (its `label_value`: the layers keep engines and providers apart)."""

    def value(text: str) -> str:
        if re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", text):
            return text
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    return f"marina.io/cluster={value(cluster)},marina.io/node={value(node)}"


def _kubelet_files(plan: NodePlan, pki: ClusterPKI) -> list[dict[str, str]]:
    # The Node's name: unique across clusters sharing an API server, and the
    # one the node authorizer matches against the certificate's name.
    node_name = f"{plan.cluster}-{plan.name}"
    kubelet = issue(
        pki.kubernetes,
        f"system:node:{node_name}",
        organization="system:nodes",
        server=True,
        client=True,
        names=[node_name, plan.address],
    )
    server = f"https://{plan.api_address}:6443"
    return [
        _file("/etc/kubernetes/pki/ca.crt", pki.kubernetes.cert, mode="0644"),
        _file("/var/lib/kubelet/pki/kubelet.crt", kubelet.cert, mode="0644"),
        _file("/var/lib/kubelet/pki/kubelet.key", kubelet.key),
        _file(
            "/etc/kubernetes/kubelet.conf",
            _kubeconfig(
                plan.cluster, server, pki.kubernetes.cert, f"system:node:{node_name}", kubelet
            ),
        ),
        _file(
            "/etc/default/kubelet",
            f"KUBELET_EXTRA_ARGS=--node-ip={plan.address} --hostname-override="
            f"{node_name} --node-labels={node_labels(plan.cluster, plan.name)}\n",
            mode="0644",
        ),
    ]


def master_sans(plan: NodePlan) -> list[str]:
    """The API server certificate's names: this master's address, every master's
    known so far, the API's endpoint and floating IPs, the service IP and names."""
    return list(
        dict.fromkeys(
            [
                plan.name,
                plan.address,
                plan.api_address,
                *(address for _, address in plan.masters),
                *plan.api_addresses,
                *plan.public_addresses,
                KUBERNETES_SERVICE_IP,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
                "127.0.0.1",
            ]
        )
    )


def etcd_peer_url(address: str) -> str:
    return f"https://{address}:2380"


def _etcd_join_script(plan: NodePlan) -> str:
    """A later master's member add, before its own etcd starts (what kubeadm's
    control-plane-join etcd step does): through an earlier member's etcd pod,
    with that member's certificate, as the image has no etcdctl of its own.
    A member already listed with this peer URL is an earlier server of this
    node, whose data went with it: it is removed and added afresh."""
    earlier = [name for name, _ in plan.etcd_members[:-1]]
    etcdctl = (
        "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt "
        "--cert=/etc/kubernetes/pki/etcd/server.crt --key=/etc/kubernetes/pki/etcd/server.key"
    )
    return f"""#!/bin/sh
# Adds {plan.name} to the cluster's etcd before its own member starts.
set -u
export KUBECONFIG=/etc/kubernetes/admin.conf
name={shlex.quote(plan.name)}
peer={shlex.quote(etcd_peer_url(plan.address))}
pods={shlex.quote(" ".join("etcd-" + n for n in earlier))}
tries=0
while [ "$tries" -lt 90 ]; do
  for pod in $pods; do
    if members=$(kubectl -n kube-system exec "$pod" -- {etcdctl} member list); then
      stale=$(printf '%s\\n' "$members" | awk -F', ' -v peer="$peer" '$4 == peer {{print $1}}')
      for id in $stale; do
        kubectl -n kube-system exec "$pod" -- {etcdctl} member remove "$id" || continue 2
      done
      if kubectl -n kube-system exec "$pod" -- {etcdctl} member add "$name" --peer-urls="$peer"
      then
        exit 0
      fi
    fi
  done
  tries=$((tries + 1))
  sleep 10
done
echo "$name: no earlier etcd member answered" >&2
exit 1
"""


IMAGE_ADDONS = "/usr/share/marina/addons"
"""Add-on manifests an image may bake in: applied after Marina's own."""
METRICS_SERVER_IMAGE = "registry.k8s.io/metrics-server/metrics-server:v0.7.2"


def metrics_server() -> list[dict[str, object]]:
    """The metrics add-on (metrics-server, as its project ships it), as objects.

    It reaches kubelets at their InternalIP and checks their serving
    certificates against the cluster's CA: Marina issues those (workers'
    and masters' /var/lib/kubelet/pki/kubelet.crt), so no insecure TLS."""
    ns, name = "kube-system", "metrics-server"
    labels = {"k8s-app": name}
    account = {"kind": "ServiceAccount", "name": name, "namespace": ns}

    def meta(obj_name: str, **extra: object) -> dict[str, object]:
        return {"name": obj_name, "labels": labels, **extra}

    def binding(kind: str, obj_name: str, role_kind: str, role: str) -> dict[str, object]:
        metadata = meta(obj_name, **({"namespace": ns} if kind == "RoleBinding" else {}))
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [account],
        }

    read = ["get", "list", "watch"]
    container = {
        "name": name,
        "image": METRICS_SERVER_IMAGE,
        "args": [
            "--cert-dir=/tmp",
            "--secure-port=10250",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            "--metric-resolution=15s",
        ],
        "ports": [{"containerPort": 10250, "name": "https", "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "https", "scheme": "HTTPS"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp-dir", "mountPath": "/tmp"}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, namespace=ns)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": {
                    **labels,
                    "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                    "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                    "rbac.authorization.k8s.io/aggregate-to-view": "true",
                },
            },
            "rules": [
                {"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": read}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta("system:metrics-server"),
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": read},
            ],
        },
        binding(
            "RoleBinding",
            "metrics-server-auth-reader",
            "Role",
            "extension-apiserver-authentication-reader",
        ),
        binding(
            "ClusterRoleBinding",
            "metrics-server:system:auth-delegator",
            "ClusterRole",
            "system:auth-delegator",
        ),
        binding(
            "ClusterRoleBinding", "system:metrics-server", "ClusterRole", "system:metrics-server"
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name, namespace=ns),
            "spec": {
                "selector": labels,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(name, namespace=ns),
            "spec": {
                "selector": {"matchLabels": labels},
                "strategy": {"rollingUpdate": {"maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        "priorityClassName": "system-cluster-critical",
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [container],
                        "volumes": [{"name": "tmp-dir", "emptyDir": {}}],
                    },
                },
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": meta("v1beta1.metrics.k8s.io"),
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                # The aggregator's own convention for metrics-server's
                # self-signed serving certificate (as its project ships it).
                "insecureSkipTLSVerify": True,
                "service": {"name": name, "namespace": ns},
            },
        },
    ]


def _master_files(plan: NodePlan, pki: ClusterPKI) -> tuple[list[dict[str, str]], list[str]]:
    sans = master_sans(plan)
    apiserver = issue(pki.kubernetes, "kube-apiserver", server=True, names=sans)
    kubelet_client = issue(
        pki.kubernetes, "kube-apiserver-kubelet-client", organization="system:masters", client=True
    )
    etcd_names = [plan.name, plan.address, "localhost", "127.0.0.1"]
    etcd_server = issue(pki.etcd, plan.name, server=True, client=True, names=etcd_names)
    etcd_peer = issue(pki.etcd, plan.name, server=True, client=True, names=etcd_names)
    etcd_client = issue(pki.etcd, "kube-apiserver-etcd-client", client=True)
    proxy_client = issue(pki.front_proxy, "front-proxy-client", client=True)
    # The kubelet serves with a certificate of the cluster's CA, as workers' do,
    # so metrics-server can check it.
    kubelet_serving = issue(
        pki.kubernetes, f"system:node:{plan.name}", server=True, names=[plan.name, plan.address]
    )
    sa = serialization.load_pem_private_key(pki.service_account_key.encode(), None)
    sa_pub = (
        sa.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    p = "/etc/kubernetes/pki"
    files = [
        _file(f"{p}/ca.crt", pki.kubernetes.cert, mode="0644"),
        _file(f"{p}/ca.key", pki.kubernetes.key),
        _file(f"{p}/apiserver.crt", apiserver.cert, mode="0644"),
        _file(f"{p}/apiserver.key", apiserver.key),
        _file(f"{p}/apiserver-kubelet-client.crt", kubelet_client.cert, mode="0644"),
        _file(f"{p}/apiserver-kubelet-client.key", kubelet_client.key),
        _file(f"{p}/etcd/ca.crt", pki.etcd.cert, mode="0644"),
        _file(f"{p}/etcd/ca.key", pki.etcd.key),
        _file(f"{p}/etcd/server.crt", etcd_server.cert, mode="0644"),
        _file(f"{p}/etcd/server.key", etcd_server.key),
        _file(f"{p}/etcd/peer.crt", etcd_peer.cert, mode="0644"),
        _file(f"{p}/etcd/peer.key", etcd_peer.key),
        _file(f"{p}/apiserver-etcd-client.crt", etcd_client.cert, mode="0644"),
        _file(f"{p}/apiserver-etcd-client.key", etcd_client.key),
        _file(f"{p}/front-proxy-ca.crt", pki.front_proxy.cert, mode="0644"),
        _file(f"{p}/front-proxy-ca.key", pki.front_proxy.key),
        _file(f"{p}/front-proxy-client.crt", proxy_client.cert, mode="0644"),
        _file(f"{p}/front-proxy-client.key", proxy_client.key),
        _file(f"{p}/sa.key", pki.service_account_key),
        _file(f"{p}/sa.pub", sa_pub, mode="0644"),
        _file("/var/lib/kubelet/pki/kubelet.crt", kubelet_serving.cert, mode="0644"),
        _file("/var/lib/kubelet/pki/kubelet.key", kubelet_serving.key),
    ]
    members = plan.etcd_members
    first = len(members) == 1
    initial = ",".join(f"{name}={etcd_peer_url(address)}" for name, address in members)
    config = [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta3",
            "kind": "InitConfiguration",
            "localAPIEndpoint": {"advertiseAddress": plan.address, "bindPort": 6443},
            "nodeRegistration": {"name": plan.name, "kubeletExtraArgs": {"node-ip": plan.address}},
        },
        {
            "apiVersion": "kubeadm.k8s.io/v1beta3",
            "kind": "ClusterConfiguration",
            "clusterName": plan.cluster,
            "controlPlaneEndpoint": f"{plan.api_address}:6443",
            "apiServer": {"certSANs": sans},
            # Each Node gets a pod range of its own, which podnet.py routes to.
            "controllerManager": {
                "extraArgs": {
                    "allocate-node-cidrs": "true",
                    "cluster-cidr": POD_CIDR,
                    "node-cidr-mask-size": str(NODE_CIDR_MASK),
                }
            },
            "networking": {"podSubnet": POD_CIDR, "serviceSubnet": SERVICE_CIDR},
            "etcd": {
                "local": {
                    "serverCertSANs": etcd_names,
                    "peerCertSANs": etcd_names,
                    "extraArgs": {
                        "name": plan.name,
                        "initial-advertise-peer-urls": etcd_peer_url(plan.address),
                        "initial-cluster": initial,
                        "initial-cluster-state": "new" if first else "existing",
                    },
                }
            },
        },
    ]
    files.append(_file("/etc/marina/kubeadm.yaml", yaml.safe_dump_all(config)))
    # Certificates and keys are all in place: kubeadm makes none, in the RKE/zke
    # order: etcd plane (a later master joins it first), control plane, then the
    # network plugin and (first master only) the add-ons.
    kubeadm = "kubeadm init phase {} --config /etc/marina/kubeadm.yaml".format
    steps = [kubeadm("kubeconfig all")]
    if not first:
        files.append(_file("/etc/marina/etcd-join.sh", _etcd_join_script(plan), mode="0700"))
        steps.append("/etc/marina/etcd-join.sh")
    steps += [
        kubeadm("etcd local"),
        kubeadm("control-plane all"),
        kubeadm("kubelet-start"),
        kubeadm("mark-control-plane"),
    ]
    podnet, podnet_steps = _podnet_files(plan.name, "/etc/kubernetes/kubelet.conf")
    files += podnet
    steps += podnet_steps
    if first:
        files.append(
            _file(
                "/etc/marina/addons/metrics-server.yaml",
                yaml.safe_dump_all(metrics_server(), sort_keys=False),
                mode="0644",
            )
        )
        admin = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
        steps += [
            kubeadm("upload-config all"),
            kubeadm("addon kube-proxy"),
            kubeadm("addon coredns"),
            f"{admin} apply -f /etc/marina/addons",
            # Whatever else the image bakes in.
            f"if [ -d {IMAGE_ADDONS} ]; then {admin} apply -f {IMAGE_ADDONS}; fi",
        ]
    return files, steps


def _gateway_files(plan: NodePlan, etcd: GatewayEtcd) -> tuple[list[dict[str, str]], list[str]]:
    # The image's marina-gateway.service (elements/marina-gateway) reads
    # /etc/marina/gateway.env and runs as the marina-gateway user.
    d = "/etc/marina"
    tls = f"--etcd-cacert {d}/etcd-ca.pem --etcd-cert {d}/etcd-client.pem"
    env = (
        f"MARINA_ETCD={etcd.url}\n"
        f"MARINA_CLUSTER={plan.cluster}\n"
        # HAProxy binds the fixed address; the floating IP is NAT in front of it.
        f"MARINA_ADDRESS={plan.address}\n"
        f"MARINA_GATEWAY_ARGS={tls} --etcd-key {d}/etcd-client-key.pem "
        f"--id {plan.cluster}-{plan.name}\n"
    )
    private = {"owner": "root:marina-gateway", "permissions": "0640"}
    files = [
        _file(f"{d}/etcd-ca.pem", etcd.ca, mode="0644"),
        _file(f"{d}/etcd-client.pem", etcd.client.cert, mode="0644"),
        {**_file(f"{d}/etcd-client-key.pem", etcd.client.key), **private},
        _file(f"{d}/gateway.env", env, mode="0644"),
    ]
    return files, ["systemctl enable --now marina-gateway.service"]


def render_user_data(
    plan: NodePlan, pki: ClusterPKI, *, gateway_etcd: GatewayEtcd | None = None
) -> str:
    """The `#cloud-config` document of one server."""
    if plan.role == "master":
        files, steps = _master_files(plan, pki)
    elif plan.role == "minion":
        files = _kubelet_files(plan, pki)
        podnet, podnet_steps = _podnet_files(
            f"{plan.cluster}-{plan.name}", "/etc/kubernetes/kubelet.conf"
        )
        files += podnet
        steps = ["systemctl enable --now kubelet", *podnet_steps]
    elif plan.role == "gateway":
        if gateway_etcd is None:
            raise ValueError("a gateway's user data needs Marina's etcd")
        files, steps = _gateway_files(plan, gateway_etcd)
    else:
        raise ValueError(f"role {plan.role!r}: not master, minion or gateway")
    document = {
        "hostname": plan.name,
        "preserve_hostname": False,
        "write_files": files,
        "runcmd": [["sh", "-c", step] for step in steps],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)
