#!/usr/bin/python3
"""Consistency of convserve's deployment files, read as data (Debian's python3-yaml):

docker/docker-compose.yml, docker/prometheus.yml, docker/Dockerfile, the Grafana provisioning and
dashboard, and docker/k8s/*.yaml must agree on ports, mounts, the GPU, health checks and the
datasource. Prints one line per failed check and exits 1 on any.

    check_deployment.py REPO_ROOT
"""

import json
import os
import re
import sys

import yaml

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
    return condition


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def flag(args, name):
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def check_compose(docker):
    compose = yaml.safe_load(open(os.path.join(docker, "docker-compose.yml")))
    services = compose.get("services", {})
    for name in ("convserve", "prometheus", "grafana"):
        check(name in services, f"compose: no service {name}")
    if failures:
        return None
    server = services["convserve"]
    devices = (server.get("deploy", {}).get("resources", {}).get("reservations", {})
               .get("devices", []))
    check(any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices),
          "compose: convserve reserves no NVIDIA GPU")
    args = server.get("command", [])
    metrics_port = port_of(flag(args, "metrics_listen") or ":0")
    grpc_port = port_of(flag(args, "listen") or ":0")
    published = {str(p).split(":")[-1] for p in server.get("ports", [])}
    check(str(grpc_port) in published, f"compose: gRPC port {grpc_port} not published")
    check(flag(args, "model_repository"), "compose: convserve serves no model repository")

    prom_config = yaml.safe_load(open(os.path.join(docker, "prometheus.yml")))
    targets = [t for job in prom_config["scrape_configs"] if job["job_name"] == "convserve"
               for sc in job.get("static_configs", []) for t in sc["targets"]]
    check(f"convserve:{metrics_port}" in targets,
          f"prometheus.yml: does not scrape convserve:{metrics_port} (got {targets})")
    prom_mounts = services["prometheus"].get("volumes", [])
    check(any(v.startswith("./prometheus.yml:") for v in prom_mounts),
          "compose: prometheus does not mount ./prometheus.yml")

    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"].get("volumes", [])
                          if v.startswith("./"))
    for source in ("./grafana/provisioning", "./grafana/dashboards"):
        check(source in grafana_mounts, f"compose: grafana does not mount {source}")
        check(os.path.isdir(os.path.join(docker, source)), f"{source} missing")
    provider = yaml.safe_load(open(os.path.join(
        docker, "grafana/provisioning/dashboards/convserve.yml")))["providers"][0]
    check(provider["options"]["path"] == grafana_mounts.get("./grafana/dashboards"),
          "grafana: dashboard provider path is not where compose mounts the dashboards")
    home = services["grafana"].get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        check(os.path.exists(os.path.join(docker, "grafana/dashboards", os.path.basename(home))),
              f"grafana: home dashboard {home} is not shipped")
    datasource = yaml.safe_load(open(os.path.join(
        docker, "grafana/provisioning/datasources/prometheus.yml")))["datasources"][0]
    check(datasource["url"] == "http://prometheus:9090",
          f"grafana datasource url {datasource['url']} is not the compose prometheus")
    return datasource["uid"], metrics_port, grpc_port


def check_dashboard(docker, datasource_uid):
    path = os.path.join(docker, "grafana/dashboards/convserve.json")
    dashboard = json.load(open(path))
    ids = set()
    for panel in dashboard["panels"]:
        check(panel["id"] not in ids, f"dashboard: duplicate panel id {panel['id']}")
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        title = panel["title"]
        check(panel.get("datasource", {}).get("uid") == datasource_uid,
              f"dashboard: panel '{title}' does not use datasource uid {datasource_uid}")
        targets = panel.get("targets", [])
        check(targets, f"dashboard: panel '{title}' has no query")
        for t in targets:
            expr = t.get("expr", "")
            check(re.search(r"\bconvserve_[a-z_]+", expr),
                  f"dashboard: panel '{title}' query reads no convserve metric: {expr!r}")
            check(expr.count("(") == expr.count(")"),
                  f"dashboard: panel '{title}' unbalanced parentheses: {expr!r}")
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("latency", "throughput", "error", "rejection", "batch size", "queue depth",
                  "occupancy", "kernel time", "device memory"):
        check(topic in titles, f"dashboard: no panel about {topic}")


def check_dockerfile(docker, grpc_port, metrics_port):
    text = open(os.path.join(docker, "Dockerfile")).read()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    check(len(stages) >= 2 and "devel" in stages[0] and "runtime" in stages[-1],
          f"Dockerfile: want a CUDA devel build stage and a runtime stage, got {stages}")
    check("install-deps.sh --build" in text and "install-deps.sh --runtime" in text,
          "Dockerfile: stages do not use scripts/install-deps.sh")
    check("scripts/build.sh" in text, "Dockerfile: does not build with scripts/build.sh")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    check(users and users[-1] not in ("root", "0"), "Dockerfile: runs as root")
    check(re.search(r"^HEALTHCHECK .*convserve-cli\", \"health\"", text, re.M | re.S),
          "Dockerfile: no HEALTHCHECK through convserve-cli health")
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.*)$", text, re.M) for p in line.split()}
    check({grpc_port, metrics_port} <= exposed, f"Dockerfile: EXPOSE {exposed} misses ports")


def check_k8s(docker, metrics_port):
    docs = []
    for name in sorted(os.listdir(os.path.join(docker, "k8s"))):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(open(os.path.join(docker, "k8s", name))) if d]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    services = [d for d in docs if d["kind"] == "Service"]
    if not check(len(deployments) == 1 and services, "k8s: want one Deployment and Services"):
        return
    pod = deployments[0]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    check(str(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")) == "1",
          "k8s: container does not ask for nvidia.com/gpu: 1")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(port_of(flag(container["args"], "metrics_listen")) == ports.get("metrics"),
          "k8s: --metrics_listen is not the metrics containerPort")
    check(port_of(flag(container["args"], "listen")) == ports.get("grpc"),
          "k8s: --listen is not the grpc containerPort")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check(container.get(probe, {}).get("grpc", {}).get("port") == ports.get("grpc"),
              f"k8s: {probe} is not a gRPC health probe on the gRPC port")
    annotations = pod["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true" and
          annotations.get("prometheus.io/port") == str(ports.get("metrics")) == str(metrics_port),
          "k8s: pod scrape annotations do not name the metrics port")
    check(pod["spec"].get("securityContext", {}).get("runAsNonRoot") is True, "k8s: may run as root")
    for service in services:
        check(service["spec"]["selector"].items() <= labels.items(),
              f"k8s: service {service['metadata']['name']} selects no convserve pod")
    check(any(s["spec"].get("clusterIP") == "None" for s in services),
          "k8s: no headless service for client-side round-robin")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../..")
    docker = os.path.join(root, "docker")
    found = check_compose(docker)
    if found:
        uid, metrics_port, grpc_port = found
        check_dashboard(docker, uid)
        check_dockerfile(docker, grpc_port, metrics_port)
        check_k8s(docker, metrics_port)
    for f in failures:
        print("FAIL", f)
    print(f"check_deployment: {len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
