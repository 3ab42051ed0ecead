#!/usr/bin/env python3
"""Cross-checks a rendered kustomize stream (stdin) against scopegate's serve config.

kubernetes-validate checks each resource against the Kubernetes schemas; this checks what no
schema can: that the paths in the serve config are the pod's mounts, that ports, probes,
Services, the ServiceMonitor (a CRD without a built-in schema), the HPA and the PDB point at
what exists, that the grace period covers preStop plus limits.shutdown_drain, and that the
pod runs locked down. Usage: kustomize build DIR | consistency.py [--no-placeholders] [--dockerfile F]
"""

import argparse
import json
import os
import posixpath
import re
import sys
import tomllib

import yaml

errors = []


def fail(message):
    errors.append(message)


def seconds(duration):
    """humantime subset used in configs: 20s, 500ms, 1m, 1h, 1m30s."""
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", duration):
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-placeholders", action="store_true",
                        help="fail on resources annotated as placeholders (production overlays)")
    parser.add_argument("--dockerfile", help="check that its CMD uses the same config path")
    args = parser.parse_args()

    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}

    deployments = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "scopegate"]
    if len(deployments) != 1:
        sys.exit("error: expected one Deployment named scopegate")
    deployment = deployments[0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "scopegate")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = container.get("volumeMounts", [])

    if not matches(deployment["spec"]["selector"]["matchLabels"], pod_labels):
        fail("Deployment selector does not match its pod labels")

    def mount_for(path):
        """(mount, key inside the volume) of the deepest mount holding `path`."""
        best = None
        for m in mounts:
            root = m["mountPath"].rstrip("/")
            if path == root or path.startswith(root + "/"):
                if best is None or len(root) > len(best[0]["mountPath"].rstrip("/")):
                    best = (m, posixpath.relpath(path, root))
        return best

    def source_keys(volume):
        """Keys of the ConfigMap or Secret behind a volume, or None when it is not rendered here."""
        if "configMap" in volume:
            cm = configmaps.get(volume["configMap"]["name"])
            return None if cm is None else set(cm.get("data", {})) | set(cm.get("binaryData", {}))
        if "secret" in volume:
            s = secrets.get(volume["secret"]["secretName"])
            if s is None:
                return None
            return set(s.get("data", {})) | set(s.get("stringData", {}))
        return None

    for m in mounts:
        if "subPath" in m:
            fail(f"mount {m['mountPath']}: subPath mounts never see ConfigMap/Secret updates")
        if not m.get("readOnly"):
            fail(f"mount {m['mountPath']}: not readOnly")

    # The serve config itself: --config FILE must be a key of the ConfigMap mounted there.
    argv = container.get("command", []) + container.get("args", [])
    if "serve" not in argv or "--config" not in argv:
        sys.exit(f"error: container args {argv} are not `serve --config FILE`")
    config_path = argv[argv.index("--config") + 1]
    found = mount_for(config_path)
    if not found:
        sys.exit(f"error: --config {config_path} is not under any volume mount")
    mount, key = found
    volume = volumes[mount["name"]]
    cm = configmaps.get(volume.get("configMap", {}).get("name", ""))
    if cm is None or key not in cm.get("data", {}):
        sys.exit(f"error: --config {config_path}: no ConfigMap key {key} behind mount {mount['mountPath']}")
    config = tomllib.loads(cm["data"][key])
    print(f"serve config {config_path} from ConfigMap {cm['metadata']['name']}")

    if args.dockerfile:
        with open(args.dockerfile) as f:
            cmd = [json.loads(line[len("CMD"):]) for line in f if line.startswith("CMD ")]
        if not cmd or cmd[-1] != ["serve", "--config", config_path]:
            fail(f"{args.dockerfile}: CMD {cmd} does not serve --config {config_path}")

    # Ports: the config's listen/admin ports are the container ports the probes and Services use.
    if port_of(config["listen"]["address"]) != ports.get("https"):
        fail(f"listen.address {config['listen']['address']} is not container port https {ports.get('https')}")
    admin = config.get("admin", {}).get("address", "127.0.0.1:9090")
    if port_of(admin) != ports.get("admin"):
        fail(f"admin.address {admin} is not container port admin {ports.get('admin')}")
    if admin.startswith("127.") or admin.startswith("[::1]"):
        fail(f"admin.address {admin} is loopback: kubelet probes and Prometheus cannot reach it")

    # Every file the config names must be inside a mount, and present in its source.
    files = [("listen.tls_cert", config["listen"].get("tls_cert")),
             ("listen.tls_key", config["listen"].get("tls_key")),
             ("opaque.static_tokens_file", config.get("opaque", {}).get("static_tokens_file")),
             ("opaque.introspection.client_secret_file",
              config.get("opaque", {}).get("introspection", {}).get("client_secret_file"))]
    key_sets = [("jwt.keys", config["jwt"].get("keys", []))]
    for kind, companion in config["jwt"].get("companions", {}).items():
        key_sets.append((f"jwt.companions.{kind}.keys", companion.get("keys", [])))
    for prefix, keys in key_sets:
        for i, k in enumerate(keys):
            for field in ("pem", "jwks_file", "hmac_secret_file"):
                files.append((f"{prefix}[{i}].{field}", k.get(field)))
    config_dir = posixpath.dirname(config_path)
    for name, path in files:
        if path is None:
            continue
        path = posixpath.normpath(posixpath.join(config_dir, path))
        found = mount_for(path)
        if not found:
            fail(f"{name} = {path}: not under any volume mount")
            continue
        mount, key = found
        volume = volumes[mount["name"]]
        keys = source_keys(volume)
        source = volume.get("secret", {}).get("secretName") or volume.get("configMap", {}).get("name")
        if keys is None:
            print(f"{name} = {path}: from {source}, created outside this output (key {key})")
        elif key not in keys:
            fail(f"{name} = {path}: {source} has no key {key} (has {sorted(keys)})")
        else:
            print(f"{name} = {path}: {source} key {key}")

    # Route directories: whole-directory ConfigMap mounts with an unhashed name, so that an edit
    # reaches running pods (scopegate reloads on the ..data symlink swap).
    for path in config["routes"]["paths"]:
        path = posixpath.normpath(posixpath.join(config_dir, path))
        mount = next((m for m in mounts if m["mountPath"].rstrip("/") == path), None)
        if mount is None:
            fail(f"routes.paths {path}: not exactly a volume mount (a directory of route files)")
            continue
        volume = volumes[mount["name"]]
        name = volume.get("configMap", {}).get("name")
        if name not in configmaps:
            fail(f"routes.paths {path}: not a ConfigMap rendered here")
            continue
        if name != "scopegate-routes":
            fail(f"routes.paths {path}: ConfigMap {name} has a hashed name; each edit would need a rollout")
        route_files = [k for k in configmaps[name].get("data", {}) if k.endswith(".toml")]
        if not route_files:
            fail(f"routes.paths {path}: ConfigMap {name} holds no *.toml file")
        print(f"routes.paths {path}: ConfigMap {name}, {len(route_files)} route files")

    # Graceful shutdown: grace period >= preStop sleep + drain.
    drain = seconds(config.get("limits", {}).get("shutdown_drain", "20s"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    sleep = 0.0
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    elif "exec" in pre_stop:
        cmd = pre_stop["exec"]["command"]
        if posixpath.basename(cmd[0]) == "sleep":
            sleep = float(cmd[1])
    if sleep == 0:
        fail("no preStop sleep: endpoints are still being removed when SIGTERM stops accepting")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < sleep + drain:
        fail(f"terminationGracePeriodSeconds {grace} < preStop {sleep}s + shutdown_drain {drain}s")
    print(f"shutdown: preStop {sleep:g}s + drain {drain:g}s <= grace period {grace}s")

    # Probes on the admin port.
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http = container.get(probe, {}).get("httpGet", {})
        if http.get("path") != path or http.get("port") not in ("admin", ports.get("admin")):
            fail(f"{probe}: expected GET {path} on the admin port, got {http}")

    # Locked down.
    psc, csc = spec.get("securityContext", {}), container.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        fail("runAsNonRoot is not set")
    if not csc.get("readOnlyRootFilesystem"):
        fail("readOnlyRootFilesystem is not set")
    if csc.get("allowPrivilegeEscalation") is not False:
        fail("allowPrivilegeEscalation is not false")
    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
        fail("capabilities do not drop ALL")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        fail(f"seccompProfile is {seccomp}, not RuntimeDefault")
    if not container.get("resources", {}).get("limits") or not container.get("resources", {}).get("requests"):
        fail("container has no resource requests and limits")

    # Services select the pods and name real container ports.
    services = by_kind.get("Service", [])
    for s in services:
        if not matches(s["spec"].get("selector"), pod_labels):
            fail(f"Service {s['metadata']['name']}: selector does not match the pods")
        for p in s["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if isinstance(target, str) and target not in ports:
                fail(f"Service {s['metadata']['name']}: targetPort {target} is no container port")

    # ServiceMonitor: no schema in kubernetes-validate (a CRD), so its shape and targets here.
    monitors = by_kind.get("ServiceMonitor", [])
    for sm in monitors:
        name = sm["metadata"]["name"]
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            fail(f"ServiceMonitor {name}: apiVersion {sm['apiVersion']}")
        unknown = set(sm["spec"]) - {"selector", "endpoints", "namespaceSelector", "jobLabel",
                                     "targetLabels", "podTargetLabels", "sampleLimit"}
        if unknown:
            fail(f"ServiceMonitor {name}: unknown spec fields {sorted(unknown)}")
        selected = [s for s in services
                    if matches(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
        if len(selected) != 1:
            fail(f"ServiceMonitor {name}: selects {len(selected)} Services, expected 1")
            continue
        names = {p.get("name") for p in selected[0]["spec"]["ports"]}
        for e in sm["spec"].get("endpoints", []):
            if e.get("port") not in names:
                fail(f"ServiceMonitor {name}: port {e.get('port')} not in Service {selected[0]['metadata']['name']}")
            if e.get("path", "/metrics") != "/metrics":
                fail(f"ServiceMonitor {name}: path {e.get('path')} is not /metrics")
            svc_port = next((p for p in selected[0]["spec"]["ports"] if p.get("name") == e.get("port")), {})
            if svc_port and svc_port.get("targetPort") not in ("admin", ports.get("admin")):
                fail(f"ServiceMonitor {name}: scrapes {svc_port.get('targetPort')}, not the admin port")
        print(f"ServiceMonitor {name}: Service {selected[0]['metadata']['name']} port {[e.get('port') for e in sm['spec']['endpoints']]}")
    if not monitors:
        print("no ServiceMonitor in this output")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", deployment["metadata"]["name"]):
            fail(f"HPA {hpa['metadata']['name']} targets {ref}")
        if "replicas" in deployment["spec"]:
            fail("Deployment sets replicas although an HPA owns the count")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
            fail(f"PDB {pdb['metadata']['name']}: selector does not match the pods")

    if args.no_placeholders:
        for d in docs:
            if d["metadata"].get("annotations", {}).get("scopegate.example.com/placeholder") == "true":
                fail(f"{d['kind']} {d['metadata']['name']} is a placeholder and would overwrite the real one")

    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"consistent: {len(docs)} resources")


if __name__ == "__main__":
    main()
