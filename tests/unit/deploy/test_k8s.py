"""deploy/k8s/: every manifest parses and agrees with the code: MOMENTS_* variables are
settings fields with valid values, ports and mounts match them, the rules ConfigMap loads,
selectors select the worker pods, and resources cover the measured footprint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

from moments.cli import build_parser
from moments.connections import security_problems
from moments.metrics_server import HEALTH_PATHS
from moments.settings import Settings, load_settings
from moments.statezip import CURRENT_DICTIONARY, KNOWN_DICTIONARIES
from rules.catalog import load_rules
from tests.unit.catalogs import default_rules

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
MEASURED_PEAK_RSS_MIB = 692
"""Peak RSS of a worker with the RocksDB store (deploy/k8s's) processing 1M events of 632k
subscribers: `benchmarks/recovery.py --store rocksdb --events 1000000 --subscribers
1000000`, 2026-12-06 (its restoring worker peaked at 364-376 MiB). The 672 MiB before
was a memory-store bench's, 2026-11-23."""
MEBI = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}


def documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in YAML(typ="safe").load_all(path.read_text()):
            if doc:
                yield path, doc


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for p, d in documents()
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and p.name != "secret.example.yaml"
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def mebibytes(quantity: str) -> float:
    return float(quantity[:-2]) * MEBI[quantity[-2:]]


@pytest.fixture(scope="module")
def worker() -> dict[str, Any]:
    statefulset = one("StatefulSet")
    containers: list[dict[str, Any]] = statefulset["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings a worker pod gets: the ConfigMap and the (example) Secret, with the
    rules folder at the path MOMENTS_RULES names replaced by a local copy."""
    for key in [k for k in os.environ if k.startswith("MOMENTS_")]:
        monkeypatch.delenv(key)
    for key, value in one("ConfigMap", "moments-config")["data"].items():
        monkeypatch.setenv(key, str(value))
    secret = YAML(typ="safe").load((K8S / "secret.example.yaml").read_text())["stringData"]
    monkeypatch.setenv("MOMENTS_REDIS_URL", secret["url"])
    monkeypatch.setenv("MOMENTS_REDIS_USERNAME", secret["username"])
    (tmp_path / "redis-password").write_text(secret["password"] + "\n")  # as a file holds it
    monkeypatch.setenv("MOMENTS_REDIS_PASSWORD_FILE", str(tmp_path / "redis-password"))
    monkeypatch.setenv("MOMENTS_RULES", str(tmp_path / "rules"))
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(
        one("ConfigMap", "moments-rules")["data"]["rules.yaml"]
    )
    return load_settings()


def test_every_manifest_is_listed_in_the_kustomization() -> None:
    listed = set(one("Kustomization")["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == files
    kinds = {d["kind"] for _, d in documents()}
    assert {"StatefulSet", "Service", "ServiceMonitor", "NetworkPolicy", "ConfigMap"} <= kinds


def test_moments_variables_are_settings_fields_with_valid_values(
    worker: dict[str, Any], settings: Settings
) -> None:
    fields = {f"MOMENTS_{f.upper()}" for f in Settings.model_fields}
    names = set(one("ConfigMap", "moments-config")["data"]) | {e["name"] for e in worker["env"]}
    unknown = {n for n in names if n.split("__")[0].removesuffix("_FILE") not in fields}
    assert not unknown, f"not settings fields (ignored silently): {unknown}"
    assert worker["envFrom"][0]["configMapRef"]["name"] == "moments-config"
    assert settings.store == "rocksdb", "state on the volume needs the RocksDB store"
    assert settings.idempotent_producer is True


def test_ports_probes_and_mounts_match_the_settings(
    worker: dict[str, Any], settings: Settings
) -> None:
    config = one("ConfigMap", "moments-config")["data"]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert HEALTH_PATHS == ("/livez", "/readyz")  # what moments.metrics_server answers
    assert one("Service", "moments-worker")["spec"]["publishNotReadyAddresses"] is True
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    statefulset = one("StatefulSet")
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert mounts["state"]["mountPath"] == str(settings.data_dir)
    assert "state" in claims, "state directory must be a per-pod volume"
    assert mounts["rules"]["mountPath"] == config["MOMENTS_RULES"]
    assert "subPath" not in mounts["rules"], "a subPath mount never sees ConfigMap updates"
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["rules"]["configMap"]["name"] == "moments-rules"


def test_the_rules_configmap_loads_as_the_kubelet_mounts_it(tmp_path: Path) -> None:
    """Files are symlinks into a `..data` folder the kubelet swaps on update."""
    text = one("ConfigMap", "moments-rules")["data"]["rules.yaml"]
    version = tmp_path / "..2026_11_23_09_00_00.000000001"
    version.mkdir()
    (version / "rules.yaml").write_text(text)
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "rules.yaml").symlink_to("..data/rules.yaml")
    rules = load_rules(tmp_path)
    assert len(rules) == len(default_rules())


def test_the_rules_configmap_ships_the_packaged_default_catalog() -> None:
    shipped = one("ConfigMap", "moments-rules")["data"]["rules.yaml"]
    catalog = (K8S.parents[1] / "src" / "rules" / "catalog" / "default.yaml").read_text()
    assert shipped == catalog, (
        "deploy/k8s/rules-configmap.yaml is stale: put src/rules/catalog/default.yaml under "
        "its `rules.yaml: |`, indented by 4 spaces"
    )


def test_replicas_do_not_exceed_partitions_and_resources_cover_the_benchmark(
    worker: dict[str, Any], settings: Settings
) -> None:
    statefulset = one("StatefulSet")
    assert statefulset["spec"]["replicas"] <= settings.partitions, "extra workers stay idle"
    resources = worker["resources"]
    assert mebibytes(resources["requests"]["memory"]) >= 1.5 * MEASURED_PEAK_RSS_MIB
    assert mebibytes(resources["limits"]["memory"]) >= 2 * MEASURED_PEAK_RSS_MIB
    assert float(resources["requests"]["cpu"]) >= 1


def test_the_memory_limit_holds_rocksdb_at_its_bounds_with_every_partition_on_one_pod(
    worker: dict[str, Any], settings: Settings
) -> None:
    """RocksDB's block cache and every partition database's write buffers at their most,
    on top of the measured peak (which already holds some of them): a pod left with
    all the partitions (its peers down) still fits. With Faust's options (a 2 GiB cache
    and 3 x 64 MiB per database) nothing bounded it."""
    rocksdb = settings.rocksdb_memory_mib(settings.partitions)
    limit = mebibytes(worker["resources"]["limits"]["memory"])
    assert MEASURED_PEAK_RSS_MIB + rocksdb <= limit, (
        f"{MEASURED_PEAK_RSS_MIB} MiB measured + {rocksdb} MiB of RocksDB at most > {limit}"
    )


def test_service_servicemonitor_and_networkpolicy_select_the_workers(
    worker: dict[str, Any], settings: Settings
) -> None:
    statefulset = one("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one("Service")
    assert service["metadata"]["name"] == statefulset["spec"]["serviceName"]
    assert service["metadata"]["name"] == "moments-worker", "the alerts' job label"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("metrics", settings.metrics_port)

    monitor = one("ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"

    policy = one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [settings.metrics_port]
    namespaces = {
        d["metadata"].get("namespace")
        for _, d in documents()
        if d["kind"] not in ("Namespace", "Kustomization")
    }
    assert namespaces - {None} == {one("Namespace")["metadata"]["name"]}


def test_the_prometheusrule_holds_exactly_the_alert_rules_of_deploy_prometheus() -> None:
    alerts = YAML(typ="safe").load((K8S.parent / "prometheus" / "alerts.yml").read_text())
    assert one("PrometheusRule")["spec"]["groups"] == alerts["groups"]


def test_the_pod_gets_no_service_account_token() -> None:
    """The worker never calls the Kubernetes API (no client in its dependencies): a token
    in the pod would only serve whoever gets into it."""
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod


def test_redis_credentials_stay_out_of_the_url_and_the_password_is_a_file(
    worker: dict[str, Any], settings: Settings
) -> None:
    """As docs/security.md advises: the Secret's URL holds no credentials (the worker
    refuses one with a password beside MOMENTS_REDIS_PASSWORD), and the password reaches
    the worker as a mounted file, not an environment variable."""
    text = (K8S / "secret.example.yaml").read_text()
    secret = YAML(typ="safe").load(text)["stringData"]
    assert urlsplit(secret["url"]).password is None
    assert urlsplit(secret["url"]).username is None
    assert "@" not in text, "a URL with credentials in the example's instructions"
    assert security_problems(settings) == []
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == secret["password"]

    env = {e["name"]: e for e in worker["env"]}
    assert "MOMENTS_REDIS_PASSWORD" not in env
    assert env["MOMENTS_REDIS_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "moments-redis",
        "key": "username",
        "optional": True,
    }
    password_file = Path(env["MOMENTS_REDIS_PASSWORD_FILE"]["value"])
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in one("StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, m in mounts.items() if m["mountPath"] == str(password_file.parent)]
    assert mounts[name]["readOnly"] is True
    mounted = volumes[name]["secret"]
    assert mounted["secretName"] == env["MOMENTS_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert mounted["items"] == [{"key": "password", "path": password_file.name}]
    assert mounted["defaultMode"] == 0o440  # the worker's group (fsGroup) reads it, no one else


def test_kubernetes_waits_for_a_stuck_worker_to_end_itself(settings: Settings) -> None:
    """A worker whose event loop is stuck exits by itself MOMENTS_STOP_GRACE_SECONDS after
    SIGTERM, its loop's stack in the log; Kubernetes' SIGKILL at
    terminationGracePeriodSeconds must come after that, or the stack is never written (the
    compose file's test holds `stop_grace_period` to the same)."""
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > settings.stop_grace_seconds


def test_the_pods_run_this_version_and_the_guide_says_how_to_build_and_push_it(
    worker: dict[str, Any],
) -> None:
    """The StatefulSet runs `moments:0.1.0`; the only build command, the Dockerfile's
    `docker build -t moments .`, made `moments:latest` on the machine that ran it, and the
    operations guide went from the Secret to `kubectl apply -k` with no word of an image:
    on a cluster each node pulled `docker.io/library/moments:0.1.0`, and every pod stayed in
    ErrImagePull. The guide builds the tag the manifest names, pushes it, and points the
    kustomization's `images:` at the registry."""
    name, tag = worker["image"].rsplit(":", 1)
    assert tag == version("moments"), "the manifest runs another version than this one"
    guide = (K8S.parents[1] / "docs" / "operations.md").read_text()
    section = guide.split("\n## Kubernetes\n", 1)[1].split("\n### ", 1)[0]
    built = re.findall(r"docker build -t (\S+) \.", section)
    pushed = re.findall(r"docker push (\S+)", section)
    assert built, "docs/operations.md, Kubernetes: no `docker build -t REGISTRY/moments:TAG .`"
    assert pushed == built
    for image in built:
        assert image.rsplit(":", 1)[1] == tag
        assert image.rsplit(":", 1)[0].rsplit("/", 1)[-1] == name
    assert "images:" in section
    assert f"- name: {name}" in section


def test_going_live_seeds_before_the_statefulset_starts_a_worker() -> None:
    """The going-live procedure applied deploy/k8s in step 2 and seeded in step 3: the
    apply started the StatefulSet's pods, which joined the consumer group, and the seed
    refused while the group had members (telling the operator to scale to 0). It applies
    the kustomization with the StatefulSet at 0 replicas, seeds, then scales it up."""
    statefulset = one("StatefulSet")
    guide = (K8S.parents[1] / "docs" / "operations.md").read_text()
    section = guide.split("\n### The procedure\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    patches = [YAML(typ="safe").load(b) for b in blocks if "replicas:" in b]
    name = statefulset["metadata"]["name"]
    assert patches == [{"replicas": [{"name": name, "count": 0}]}], "no kustomization at 0"
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", section, re.S))
    steps = [line.split("#", 1)[0].split() for line in shell.splitlines()]
    order = [" ".join(step[:3]) for step in steps if step]
    assert order[:2] == ["kubectl apply -k", "moments state seed"], order
    scale = " ".join(steps[2])
    assert f"scale statefulset/{name} --replicas={statefulset['spec']['replicas']}" in scale


def test_the_secret_example_makes_the_namespace_before_the_secret() -> None:
    """An operator following the docs' order (the Secret, then `kubectl apply -k`) met
    `namespaces "moments" not found`: the namespace was made by the kustomization only."""
    text = (K8S / "secret.example.yaml").read_text()
    commands = [line.lstrip("# ").rstrip(" \\") for line in text.splitlines() if "kubectl " in line]
    namespace = one("Namespace")["metadata"]["name"]
    secret = [i for i, c in enumerate(commands) if f"-n {namespace} create secret" in c]
    made = [i for i, c in enumerate(commands) if c == "kubectl apply -f deploy/k8s/namespace.yaml"]
    assert secret, commands
    assert made, commands
    assert made[0] < secret[0], commands


def test_the_guide_mounts_a_dispatch_policy_as_the_rules_are(
    worker: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """deploy/k8s has no dispatch policy (the workers run the built-in one), yet the
    runbook of MomentsDispatchPolicyRefused said "fix the ConfigMap" and going live asks
    for capacity limits: the guide gives the ConfigMap, its mount and the setting. The
    ConfigMap it creates is the one the pod mounts, as a folder (a `subPath` mount never
    sees an update), at the folder MOMENTS_DISPATCH_POLICY names, and a policy mounted
    there the way the kubelet lays it out loads, and a change applied is seen."""
    guide = (K8S.parents[1] / "docs" / "operations.md").read_text()
    section = guide.split("\n## Kubernetes\n", 1)[1].split("\n### ", 1)[0]
    (create,) = re.findall(r"kubectl -n moments create configmap (\S+) --from-file=(\S+)=", section)
    name, key = create
    (patch,) = [
        YAML(typ="safe").load(block)
        for block in re.findall(r"```yaml\n(.*?)```", section, re.S)
        if "MOMENTS_DISPATCH_POLICY" in block
    ]
    (volume,) = patch["volumes"]
    (mount,) = patch["volumeMounts"]
    assert volume["configMap"]["name"] == name
    assert mount["name"] == volume["name"]
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    setting = Path(patch["data"]["MOMENTS_DISPATCH_POLICY"])
    assert setting == Path(mount["mountPath"]) / key
    taken = {m["mountPath"] for m in worker["volumeMounts"]}
    assert mount["mountPath"] not in taken, "the mount point is another volume's"

    version = tmp_path / "..2026_12_07_09_00_00.000000001"
    version.mkdir()
    (version / key).write_text((K8S.parents[1] / "docs" / "backtest-policy.yaml").read_text())
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / key).symlink_to(f"..data/{key}")
    monkeypatch.setenv("MOMENTS_DISPATCH_POLICY", str(tmp_path / key))
    from moments.reload import signature
    from sinks.policy import load_policy

    policy = Settings().dispatch_policy
    assert load_policy(policy).capacity
    # An applied change: the kubelet writes a new version folder and swaps `..data` to it.
    seen = signature(policy)
    update = tmp_path / "..2026_12_07_10_00_00.000000002"
    update.mkdir()
    (update / key).write_text("timezone: Asia/Shanghai\n")
    (tmp_path / "..data_tmp").symlink_to(update.name)
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    assert signature(policy) != seen, "the worker's reload check would not see the change"
    assert not load_policy(policy).capacity


CPU_WORDS = {"one": 1.0, "two": 2.0, "half a": 0.5}


def test_the_guide_gives_the_manifests_figures(worker: dict[str, Any]) -> None:
    """What docs/operations.md and the alerts' comments say deploy/k8s runs (its pods, its
    partitions, the replicas to scale back to, the CPU and memory asked) is what the
    manifests say: the sizing and MomentsWorkerNotReady's `for:` are derived from them,
    and a figure changed on one side only would leave the other explaining a deployment
    that is not there."""
    replicas = one("StatefulSet")["spec"]["replicas"]
    partitions = int(one("ConfigMap", "moments-config")["data"]["MOMENTS_PARTITIONS"])
    root = K8S.parents[1]
    text = " ".join(
        (root / name).read_text()
        for name in ("docs/operations.md", "docs/performance.md", "deploy/prometheus/alerts.yml")
    )
    text = re.sub(r"\s+#?\s*", " ", text)  # wrapped lines and YAML comments read as one
    pods = re.findall(r"deploy/k8s's (?:rolling update of )?(\d+) pods", text)
    pods += re.findall(r"deploy/k8s's \d+ partitions, (\d+) pods", text)
    scaled = [n for n in re.findall(r"--replicas=(\d+)", text) if n != "0"]  # 0: a stop
    held = re.findall(r"deploy/k8s's (\d+) partitions", text)
    assert len(pods) >= 3, pods
    assert len(scaled) >= 2, scaled
    assert len(held) >= 2, held
    assert {int(n) for n in pods + scaled} == {replicas}
    assert {int(n) for n in held} == {partitions}

    ((cpu, request, limit),) = re.findall(
        r"request (\w+(?: a)?) CPUs? and ([\d.]+) GiB and limit memory to ([\d.]+) GiB", text
    )
    resources = worker["resources"]
    assert CPU_WORDS[cpu] == float(resources["requests"]["cpu"])
    assert float(request) * 1024 == mebibytes(resources["requests"]["memory"])
    assert float(limit) * 1024 == mebibytes(resources["limits"]["memory"])


def test_the_statefulsets_cpu_figure_names_the_sitting_that_measured_it() -> None:
    """statefulset.yaml's comment said "one core took 18-26k events/s", no date: the rate
    moves from sitting to sitting (15.6-24.8k within one), and the README's table and
    docs/performance-log.md moved on while the comment stayed. A figure there names its
    sitting of the log, whose worker row holds both its ends."""
    text = re.sub(r"\s*#\s*", " ", (K8S / "statefulset.yaml").read_text())
    figures = re.findall(
        r"([\d.]+)-([\d.]+)k events/s through one worker[^(]*\((\d{4}-\d\d-\d\d), (\w+) "
        r"session of docs/performance-log\.md",
        text,
    )
    assert figures, "statefulset.yaml gives no events/s figure with its sitting"
    assert len(re.findall(r"events/s", text)) == len(figures), "an events/s figure undated"
    log = (K8S.parents[1] / "docs" / "performance-log.md").read_text()
    for low, high, date, session in figures:
        heading = f"## This sitting's figures ({date}, {session} session)"
        assert heading in log, heading
        section = log.split(heading, 1)[1].split("\n## ", 1)[0]
        (row,) = [line for line in section.splitlines() if line.startswith("| worker events/s")]
        rates = {round(int(n.replace(",", "")) / 1000, 1) for n in re.findall(r"\d+,\d{3}", row)}
        assert {float(low), float(high)} <= rates, (low, high, sorted(rates))


def test_the_guide_says_the_network_policy_restricts_only_what_reaches_the_workers() -> None:
    """MomentsDependencyDown's runbook ran a `redis-check` debug pod "so that it goes through
    the same network policy as the worker": deploy/k8s's NetworkPolicy restricts ingress
    only (what may reach the metrics port), so it stands between nothing and Redis, and it
    does not select that pod anyway. Egress is the installation's (its brokers' and Redis'
    addresses), and the guide says so where it sends the on-call to test the path."""
    policy = one("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]
    guide = re.sub(r"\s+", " ", (K8S.parents[1] / "docs" / "operations.md").read_text())
    assert "same network policy" not in guide
    runbook = guide.split("### MomentsDependencyDown", 1)[1].split("### ", 1)[0]
    assert "restricts only what reaches the workers" in runbook


def test_the_guide_says_a_rebalance_holds_a_node_drain_and_for_how_long(
    worker: dict[str, Any],
) -> None:
    """/readyz fails on every worker while the group rebalances, so the PodDisruptionBudget
    refuses every eviction for as long as Kubernetes holds the pods not ready: a drain waits
    out each rebalance, and nothing in the guide said so. Its figures are the manifests'
    (the budget, the readiness probe's period and failure threshold)."""
    budget = one("PodDisruptionBudget")["spec"]
    probe = worker["readinessProbe"]
    period, failures = probe["periodSeconds"], probe.get("failureThreshold", 3)
    guide = re.sub(r"\s+", " ", (K8S.parents[1] / "docs" / "operations.md").read_text())
    kubernetes = guide.split("## Kubernetes ", 1)[1].split("### Scaling", 1)[0]
    assert f"`maxUnavailable: {budget['maxUnavailable']}`" in kubernetes
    assert f"after {failures} failed probes" in kubernetes
    assert f"{period * (failures - 1)}-{period * failures} s" in kubernetes
    assert "/readyz` fails on every worker" in kubernetes


def test_the_workers_spread_over_the_nodes_and_still_run_on_fewer() -> None:
    """Nothing kept the scheduler from putting every worker on one node: that node lost
    took every partition and the standby copies meant to replace them
    (MOMENTS_STANDBY_REPLICAS sits them on another pod, not another node), and its drain
    moved every worker. The pods spread one a node, softly: a cluster with fewer nodes than
    workers, or a node cordoned, still runs them all (a hard constraint would leave the
    pods it cannot place Pending)."""
    statefulset = one("StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    spreads = {c["topologyKey"]: c for c in pod.get("topologySpreadConstraints", [])}
    assert "kubernetes.io/hostname" in spreads, "the workers may all land on one node"
    spread = spreads["kubernetes.io/hostname"]
    assert spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == statefulset["spec"]["selector"]["matchLabels"]
    guide = re.sub(r"\s+", " ", (K8S.parents[1] / "docs" / "operations.md").read_text())
    kubernetes = guide.split("## Kubernetes ", 1)[1].split("### Scaling", 1)[0]
    assert "`topologySpreadConstraints`" in kubernetes


RESTRICTED_VOLUMES = {
    *("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral"),
    *("persistentVolumeClaim", "projected", "secret"),
}
"""The volume types Pod Security's "restricted" profile admits."""


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec Kubernetes' Pod Security "restricted" profile refuses (its
    baseline controls and its own; kubernetes.io/docs/concepts/security/pod-security-standards)."""
    problems = [f"pod: {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds)}")
    pod_context = pod.get("securityContext", {})
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    for container in containers:
        context = {**pod_context, **container.get("securityContext", {})}
        name = container["name"]
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") == 0:
            problems.append(f"{name}: may run as root")
        if context.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: no seccompProfile RuntimeDefault or Localhost")
        capabilities = container.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities not dropped (ALL)")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added {capabilities['add']}")
        if any("hostPort" in port for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def test_the_namespace_refuses_pods_below_baseline_and_warns_below_restricted() -> None:
    """The workers' securityContext met Pod Security's "restricted" profile, but nothing in
    the namespace held anyone to it: a privileged pod or a hostPath volume (a debugging
    edit of the StatefulSet, another team's pod) went in unremarked. The namespace
    enforces "baseline" and warns of and audits "restricted" (enforcing it would refuse the
    runbook's `redis-check` debug pod, which runs as root), and the workers meet
    "restricted", so they raise no warning."""
    labels = one("Namespace")["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "baseline"
    assert labels.get("pod-security.kubernetes.io/warn") == "restricted"
    assert labels.get("pod-security.kubernetes.io/audit") == "restricted"
    assert restricted_problems(one("StatefulSet")["spec"]["template"]["spec"]) == []
    guide = re.sub(r"\s+", " ", (K8S.parents[1] / "docs" / "operations.md").read_text())
    assert "redis-check" in guide.split("### MomentsDependencyDown", 1)[1].split("### ", 1)[0]
    assert "Pod Security" in guide.split("## Kubernetes ", 1)[1].split("### Scaling", 1)[0]


def test_the_restricted_check_finds_what_the_profile_refuses() -> None:
    """The check above is no formality: each control it reads, broken in a copy of the
    workers' pod, is named."""
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    broken = {
        **pod,
        "hostNetwork": True,
        "securityContext": {**pod["securityContext"], "runAsNonRoot": False},
        "volumes": [*pod["volumes"], {"name": "node", "hostPath": {"path": "/"}}],
        "containers": [
            {
                **container,
                "ports": [{"containerPort": 9308, "hostPort": 9308}],
                "securityContext": {
                    "privileged": True,
                    "capabilities": {"add": ["SYS_ADMIN"]},
                    "seccompProfile": {"type": "Unconfined"},
                },
            }
        ],
    }
    problems = restricted_problems(broken)
    assert problems == [
        "pod: hostNetwork",
        "volume node: ['hostPath']",
        "worker: privileged",
        "worker: allowPrivilegeEscalation is not false",
        "worker: may run as root",
        "worker: no seccompProfile RuntimeDefault or Localhost",
        "worker: capabilities not dropped (ALL)",
        "worker: capabilities added ['SYS_ADMIN']",
        "worker: hostPort",
    ]


def upgrade_section() -> str:
    guide = (K8S.parents[1] / "docs" / "operations.md").read_text()
    heading = "### Upgrading to a new version, and rolling back\n"
    assert heading in guide, "the guide gives no upgrade procedure"
    return guide.split(heading, 1)[1].split("\n### ", 1)[0]


def test_the_upgrade_steps_come_in_order_and_name_what_the_manifests_define() -> None:
    """The guide told what a rolling upgrade or a rollback does to waiting tasks and
    subscriber records, in five sections, but gave no procedure: nowhere said to check the
    state dictionaries before the rollout (a rollout across a new one stops the old pods),
    to set the tag in the kustomization, to wait for the rollout, or that `kubectl rollout
    undo` is undone by the next `kubectl apply -k`. The steps are numbered in order; the
    names they use are the manifests'; the stop-everything path scales to 0 before it
    applies."""
    section = upgrade_section()
    flat = re.sub(r"\s+", " ", section)
    assert re.findall(r"^(\d+)\. \*\*", section, re.M) == ["1", "2", "3", "4", "5"]
    namespace = one("Namespace")["metadata"]["name"]
    statefulset = one("StatefulSet")
    name = statefulset["spec"]["serviceName"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert set(re.findall(r"kubectl -n (\S+)", flat)) == {namespace}
    assert set(re.findall(r"statefulset/([\w-]+)", flat)) == {statefulset["metadata"]["name"]}
    for key, value in re.findall(r" -l ([\w./-]+)=([\w.-]+)", flat):
        assert pod_labels.get(key) == value, key
    # A StatefulSet's rolling update replaces the highest ordinal first.
    last = f"{name}-{statefulset['spec']['replicas'] - 1}"
    assert set(re.findall(rf"{name}-\d+", flat)) == {last}
    stop_all = flat.split("4. **", 1)[1].split("5. **", 1)[0].split("--replicas=0", 1)
    assert len(stop_all) == 2
    assert "kubectl apply -k deploy/k8s" in stop_all[1]
    rollback = flat.split("**Rolling back**", 1)[1]
    assert "`newTag: OLD`" in rollback
    assert "kubectl apply -k deploy/k8s" in rollback
    assert "Not `kubectl rollout undo` alone" in rollback
    dashboard = (K8S.parent / "grafana" / "dashboards" / "moments-overview.json").read_text()
    for panel in re.findall(r'"([^"]+)" panel', flat):
        assert f'"title": "{panel}"' in dashboard, panel


def test_the_upgrade_steps_moments_commands_are_this_versions() -> None:
    """Every `moments` command the steps run (in a worker's pod or in the new image) parses
    as written, and the dictionary check prints what this version writes and reads, as
    the guide quotes it."""
    flat = re.sub(r"\s+", " ", upgrade_section())
    image = r"registry\.example\.com/ops/moments:NEW"
    runs = re.findall(rf"{image} ([a-z][^`]*)`", flat) + re.findall(r"-- moments ([^`]*)`", flat)
    assert len(runs) >= 2, runs
    parser = build_parser()
    for words in runs:
        parser.parse_args(words.split())  # SystemExit(2) on an unknown command or option
    (code,) = re.findall(r"--entrypoint python \S+ -c '([^']*)'", flat)
    printed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert printed == f"writes {CURRENT_DICTIONARY} reads {' '.join(map(str, KNOWN_DICTIONARIES))}"
    assert f"(`{printed}` for this version)" in flat


def test_the_guide_wires_kafka_credentials_into_the_pod_as_the_redis_ones_are(
    worker: dict[str, Any], settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """deploy/k8s wires Redis' credentials (a Secret, the password as a file) but not
    Kafka's, and a managed Kafka asks for SASL over TLS: the guide said "the password from
    a mounted Secret file" and left the Secret, the mount and the variables to be guessed.
    What it gives now is one whole: the Secret it creates holds every key the pod reads,
    the files land where the variables point, on a path no other volume takes, readable by
    the worker's group only, and the settings so made load with no security problem."""
    guide = (K8S.parents[1] / "docs" / "operations.md").read_text()
    section = guide.split("\n### Against a managed Kafka\n", 1)[1].split("\n### ", 1)[0]
    flat = re.sub(r"\s+", " ", section.replace("\\\n", " "))
    (create,) = re.findall(
        r"kubectl -n moments create secret generic (\S+) ((?:--from-\S+ ?)+)", flat
    )
    secret_name, sources = create
    keys = set(re.findall(r"--from-(?:literal|file)=([\w.]+)=", sources))
    (patch,) = [
        YAML(typ="safe").load(block)
        for block in re.findall(r"```yaml\n(.*?)```", section, re.S)
        if "MOMENTS_KAFKA_SASL_PASSWORD_FILE" in block
    ]
    (env,) = patch["env"]
    (mount,) = patch["volumeMounts"]
    (volume,) = patch["volumes"]
    assert env["valueFrom"]["secretKeyRef"]["name"] == secret_name
    assert volume["secret"]["secretName"] == secret_name
    assert mount["name"] == volume["name"]
    assert mount["readOnly"] is True
    assert volume["secret"]["defaultMode"] == 0o440
    items = {item["key"]: item["path"] for item in volume["secret"]["items"]}
    assert {env["valueFrom"]["secretKeyRef"]["key"], *items} <= keys
    taken = {m["mountPath"] for m in worker["volumeMounts"]}
    assert mount["mountPath"] not in taken, "the mount point is another volume's"

    # The pod: the ConfigMap and the Redis wiring as deploy/k8s has them, plus the patch,
    # with the Secret's files laid out where the mount puts them (under tmp_path).
    root = tmp_path / mount["mountPath"].lstrip("/")
    root.mkdir(parents=True)
    files = {"password": "kafka-s3cret", "ca.crt": "-----BEGIN CERTIFICATE-----\n"}
    for key, path in items.items():
        (root / path).write_text(files[key] + "\n")
    for key, value in patch["data"].items():
        value = str(value)
        if value.startswith(mount["mountPath"] + "/"):
            assert Path(value).name in items.values(), f"{key}: no file of the Secret there"
            value = str(tmp_path / value.lstrip("/"))
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(env["name"], "moments")
    kafka = load_settings()
    assert security_problems(kafka) == []
    assert kafka.kafka_security_protocol == "SASL_SSL"
    assert kafka.kafka_sasl_password is not None
    assert kafka.kafka_sasl_password.get_secret_value() == files["password"]
    assert kafka.kafka_ssl_cafile == root / items["ca.crt"]
    assert kafka.redis_password == settings.redis_password  # the Redis wiring still holds


def test_kustomize_builds_what_the_manifests_hold() -> None:
    """`kubectl apply -k deploy/k8s` is the guide's one step, and nothing ran kustomize: a
    resource it cannot read, or an `images:` entry mistyped (the guide has operators add
    one), showed only at the apply. Built with no cluster where kubectl is installed, it
    gives back every manifest listed, as the files hold them, but for the image that an
    `images:` entry renames."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl to build the kustomization")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    rendered = {
        (d["kind"], d["metadata"]["name"]): d for d in YAML(typ="safe").load_all(built.stdout) if d
    }
    listed = set(one("Kustomization")["resources"])
    expected = {(d["kind"], d["metadata"]["name"]): d for p, d in documents() if p.name in listed}
    for docs in (rendered, expected):  # `images:` (the guide's registry) sets these alone
        for container in docs[("StatefulSet", "moments-worker")]["spec"]["template"]["spec"][
            "containers"
        ]:
            container.pop("image")
    assert rendered == expected
