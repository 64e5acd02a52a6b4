"""Checks the deploy files by parsing them with real validators, and lists every cdrflow
command they run, for tests/deploy.rs to run with --dry-run:

- deploy/compose/compose.yaml against the Compose specification's JSON schema (the
  compose_spec.json shipped in the docker-compose package on PyPI);
- deploy/k8s/*.yaml against the Kubernetes OpenAPI schemas (kubernetes-validate, strict);
- Dockerfile with dockerfile-parse: two stages, the runtime stage's ENTRYPOINT is cdrflow.

    python3 deploy/local/check_deploy.py            # validate; exit 1 naming each problem
    python3 deploy/local/check_deploy.py --commands # validate, then print the commands as JSON

Each command: {"source", "args", "env", "files": {path: content or null}} with paths as the
container sees them (null: a secret, any content will do).
"""
import json
import sys
import zipfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"
problems = []
commands = []


def compose_schema():
    """compose_spec.json from the docker-compose wheel (pip download, no install)."""
    cache = REPO / "target" / "compose_spec.json"
    if not cache.exists():
        import subprocess, tempfile
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "docker-compose==1.29.2", "-d", d],
                           check=True)
            whl = next(Path(d).glob("*.whl"))
            cache.parent.mkdir(exist_ok=True)
            cache.write_bytes(zipfile.ZipFile(whl).read("compose/config/compose_spec.json"))
    return json.loads(cache.read_text())


def check_compose():
    path = REPO / "deploy/compose/compose.yaml"
    doc = yaml.safe_load(path.read_text())
    v = jsonschema.Draft201909Validator(compose_schema())
    for e in v.iter_errors(doc):
        problems.append(f"{path.relative_to(REPO)}: {'/'.join(map(str, e.path))}: {e.message}")
    configs = {k: (path.parent / c["file"]) for k, c in doc.get("configs", {}).items()}
    for name, svc in doc["services"].items():
        if svc.get("image") != "cdrflow:dev":
            continue
        files = {}
        for c in svc.get("configs", []):
            files[c["target"]] = configs[c["source"]].read_text()
        for s in svc.get("secrets", []):
            files[s["target"]] = None
        env = {k: ("x" if "${" in str(v) else str(v)) for k, v in (svc.get("environment") or {}).items()}
        commands.append({"source": f"compose.yaml service {name}", "args": svc["command"], "env": env, "files": files})


def check_k8s():
    base = REPO / "deploy/k8s"
    configmaps = {}
    docs = []
    for f in sorted(base.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc:
                continue
            docs.append((f, doc))
            if doc["kind"] == "Kustomization":
                continue
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except Exception as e:  # noqa: BLE001 - report every problem
                problems.append(f"{f.relative_to(REPO)}: {doc['kind']} {doc['metadata']['name']}: {e}")
            if doc["kind"] == "ConfigMap":
                configmaps[doc["metadata"]["name"]] = doc["data"]
    listed = {r for _, d in docs if d["kind"] == "Kustomization" for r in d["resources"]}
    for f in base.glob("*.yaml"):
        if f.name not in listed and f.name not in ("kustomization.yaml", "secret.example.yaml"):
            problems.append(f"deploy/k8s/kustomization.yaml does not list {f.name}")
    for f, doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            files = {}
            for m in c.get("volumeMounts", []):
                vol = volumes[m["name"]]
                if "configMap" in vol:
                    data = configmaps[vol["configMap"]["name"]]
                    if "subPath" in m:
                        files[m["mountPath"]] = data[m["subPath"]]
                    else:
                        for k, text in data.items():
                            files[f"{m['mountPath']}/{k}"] = text
                elif "secret" in vol:
                    for item in vol["secret"].get("items", []):
                        files[f"{m['mountPath']}/{item['path']}"] = None
            env = {e["name"]: e.get("value", "x") for e in c.get("env", [])}
            commands.append({"source": f"{f.name} {doc['kind']} {doc['metadata']['name']}", "args": c["args"],
                             "env": env, "files": files})


def check_dockerfile():
    p = DockerfileParser(path=str(REPO / "Dockerfile"))
    stages = [i for i in p.structure if i["instruction"] == "FROM"]
    if len(stages) != 2:
        problems.append(f"Dockerfile: {len(stages)} stages, expected a build stage and a runtime stage")
    entry = [i for i in p.structure if i["instruction"] == "ENTRYPOINT"]
    cmd = [i for i in p.structure if i["instruction"] == "CMD"]
    if not entry or json.loads(entry[-1]["value"]) != ["/usr/local/bin/cdrflow"]:
        problems.append("Dockerfile: the ENTRYPOINT must be /usr/local/bin/cdrflow")
    if cmd:
        commands.append({"source": "Dockerfile CMD", "args": json.loads(cmd[-1]["value"]), "env": {}, "files": {}})


check_compose()
check_k8s()
check_dockerfile()
for p in problems:
    print(f"FAIL {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"deploy files: compose, {K8S_VERSION} manifests and Dockerfile valid; {len(commands)} cdrflow commands",
      file=sys.stderr)
if "--commands" in sys.argv:
    print(json.dumps(commands, indent=1))
