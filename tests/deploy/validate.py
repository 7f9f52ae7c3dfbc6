#!/usr/bin/env python3
"""The checks behind tests/deploy/check.sh that need Python.

Each subcommand prints what it checked (one line); when the check fails, the
problems follow on indented lines and it exits 1:

  k8s VERSIONS FILE...     every resource in FILEs validates strictly (unknown
                           fields are errors) against the Kubernetes schemas
                           that PyPI's kubernetes-validate ships, for each
                           version in VERSIONS (comma separated); a kind with
                           no schema is an error, not a warning
  kserve FILE...           KServe resources against the KServe SDK's own
                           models (PyPI `kserve`), strictly, plus what KServe
                           itself would refuse or mis-route
  compose FILE             a Compose file's keys, named volumes and bind
                           sources (beside `docker compose config`, which
                           does not look for the sources)
  dashboard JSON METRICS   every metric and label a dashboard's PromQL names
                           exists in a /metrics exposition (METRICS, a file)
  docker-args KIND FILE OUT  `docker run` options and arguments (one a line,
                           `--` between) for the container of a Deployment
                           (kind deployment, FILE rendered) or a serving
                           runtime (kind kserve), as Kubernetes would run it
  models-ready URL         every model version of the ward at URL is READY
  grafana COMPOSE_DIR      the dashboard agrees with Grafana's provisioning
                           and the Compose mounts
  rules JSON OUT           the dashboard's queries as recording rules, for
                           `promtool check rules`
  promql JSON URL          every dashboard query evaluates on the Prometheus
                           at URL
  wardyaml-image FILE...   the worker paths of a ward.yaml meant for the
                           ward-server image match the image and the pinned
                           onnxruntime
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def fail(what, problems):
    """Prints what was checked and every problem, and exits 1."""
    print(what)
    for p in problems:
        print(f"  {p}")
    sys.exit(1)


def ok(what):
    print(what)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


# ---------------------------------------------------------------- Kubernetes


def cmd_k8s(versions, files):
    import kubernetes_validate
    from kubernetes_validate import utils

    problems, count = [], 0
    for file in files:
        for res in load_all(file):
            name = f"{file}: {res.get('kind')}/{res.get('metadata', {}).get('name')}"
            count += 1
            for v in versions.split(","):
                try:
                    utils.validate(res, v, strict=True)
                except utils.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    problems.append(f"{name} (Kubernetes {v}): {path}: {e.message}")
                except utils.SchemaNotFoundError as e:
                    problems.append(f"{name}: {e.message}")
    what = (
        f"{count} resources in {len(files)} files, strict, Kubernetes "
        f"{versions.replace(',', ' and ')} (kubernetes-validate "
        f"{kubernetes_validate.__version__})"
    )
    if problems or count == 0:
        fail(what, problems or ["no resources"])
    ok(what)


# ------------------------------------------------------------------- KServe

# KServe's InferenceServiceProtocol values (pkg/constants/constants.go).
KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
# Where the storage initializer puts the model (DefaultModelLocalMountPath).
KSERVE_MODEL_DIR = "/mnt/models"
# The runtime's containers and volumes are also checked as a Pod of this
# Kubernetes version.
K8S_POD_VERSION = "1.30.0"


def strict_build(value, type_name, path, problems):
    """Builds the SDK object of `type_name` from `value` (parsed YAML),
    recording every key the SDK's model does not define and every value of
    the wrong type. The SDK's own setters then refuse missing required
    fields and values outside an enum."""
    import kserve.models as km
    import kubernetes.client.models as kcm

    if value is None:
        return None
    # The kserve models spell containers list[...] and dict(...); the
    # kubernetes client's List[...] and Dict[...].
    m = re.fullmatch(r"[lL]ist\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        return [strict_build(v, m.group(1), f"{path}[{i}]", problems) for i, v in enumerate(value)]
    m = re.fullmatch(r"dict\(([^,]+), (.+)\)|Dict\[([^,]+), (.+)\]", type_name)
    if m:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map, got {type(value).__name__}")
            return None
        inner = m.group(2) or m.group(4)
        return {k: strict_build(v, inner, f"{path}.{k}", problems) for k, v in value.items()}
    prims = {"str": str, "int": int, "float": (int, float), "bool": bool}
    if type_name in prims:
        ok = isinstance(value, prims[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        if not ok:
            problems.append(f"{path}: expected {type_name}, got {value!r}")
        return value
    if type_name in ("object", "date", "datetime"):
        # IntOrString, Quantity, free-form objects: the Kubernetes schema
        # check types the Kubernetes parts; KServe's own parts have none.
        return value
    cls = getattr(km, type_name, None) or getattr(kcm, type_name, None)
    if cls is None:
        problems.append(f"{path}: the SDK has no model {type_name}")
        return None
    if not isinstance(value, dict):
        problems.append(f"{path}: expected {type_name} (a map), got {value!r}")
        return None
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        attr = by_json.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        kwargs[attr] = strict_build(v, cls.openapi_types[attr], f"{path}.{key}", problems)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        problems.append(f"{path}: {type_name}: {e}")
        return None


def cmd_kserve(files):
    from importlib.metadata import version

    kinds = {
        ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
        ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
        ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    }
    problems, runtimes, services = [], {}, []
    for file in files:
        for res in load_all(file):
            key = (res.get("apiVersion"), res.get("kind"))
            name = f"{file}: {key[1]}/{res.get('metadata', {}).get('name')}"
            if key not in kinds:
                problems.append(f"{name}: not a KServe resource this check knows")
                continue
            obj = strict_build(res, kinds[key], name, problems)
            if obj is None:
                continue
            if key[1].endswith("ServingRuntime"):
                runtimes[res["metadata"]["name"]] = res
            else:
                services.append((name, res))

    # The pod KServe builds from a runtime: its containers and volumes as a
    # Pod, against the Kubernetes schema too.
    from kubernetes_validate import utils

    for rname, rt in runtimes.items():
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": rname},
            "spec": {k: rt["spec"][k] for k in ("containers", "volumes") if k in rt["spec"]},
        }
        try:
            utils.validate(pod, K8S_POD_VERSION, strict=True)
        except utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"ServingRuntime {rname}'s pod (Kubernetes {K8S_POD_VERSION}): {path}: {e.message}")

    # What the schema cannot say but KServe relies on.
    for rname, rt in runtimes.items():
        spec = rt["spec"]
        where = f"ServingRuntime {rname}"
        for p in spec.get("protocolVersions", []):
            if p not in KSERVE_PROTOCOLS:
                problems.append(f"{where}: protocol {p!r} is none of {sorted(KSERVE_PROTOCOLS)}")
        if "v2" not in spec.get("protocolVersions", []):
            problems.append(f"{where}: ward speaks the Open Inference Protocol v2")
        main = [c for c in spec["containers"] if c.get("name") == "kserve-container"]
        if len(main) != 1:
            problems.append(f"{where}: KServe injects the model into the container named kserve-container")
            continue
        args = main[0].get("args", [])
        if args[:1] != ["serve"] or "--model-root" not in args:
            problems.append(f"{where}: args must be `serve ... --model-root {KSERVE_MODEL_DIR}`")
        elif args[args.index("--model-root") + 1 : args.index("--model-root") + 2] != [KSERVE_MODEL_DIR]:
            problems.append(f"{where}: --model-root must be {KSERVE_MODEL_DIR}, where the storage initializer puts the model")
        ports = [p.get("containerPort") for p in main[0].get("ports", [])]
        if ports != [8080]:
            problems.append(f"{where}: one port, 8080 (ward's --bind), not {ports}")
        for probe, want in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
            got = main[0].get(probe, {}).get("httpGet", {}).get("path")
            if got != want:
                problems.append(f"{where}: {probe} should GET {want}, not {got}")
    for name, isvc in services:
        model = isvc["spec"]["predictor"].get("model", {})
        rt = runtimes.get(model.get("runtime"))
        if rt is None:
            problems.append(f"{name}: runtime {model.get('runtime')!r} is not among the checked runtimes {sorted(runtimes)}")
            continue
        formats = [f["name"] for f in rt["spec"].get("supportedModelFormats", [])]
        if model.get("modelFormat", {}).get("name") not in formats:
            problems.append(f"{name}: model format {model.get('modelFormat')} is not one of {formats}")
        if model.get("protocolVersion", "v1") not in rt["spec"].get("protocolVersions", []):
            problems.append(f"{name}: protocol {model.get('protocolVersion', 'v1')} is not the runtime's")
        if not model.get("storageUri"):
            problems.append(f"{name}: no storageUri: nothing would be mounted at {KSERVE_MODEL_DIR}")

    what = (
        f"{len(runtimes)} serving runtime(s) and {len(services)} InferenceService(s) "
        f"against the KServe SDK {version('kserve')} models (kubernetes client "
        f"{version('kubernetes')} for the core types), strict; the runtime's pod against "
        f"Kubernetes {K8S_POD_VERSION}"
    )
    if problems or not runtimes or not services:
        fail(what, problems or ["nothing to check"])
    ok(what)


# ------------------------------------------------------------------ Compose

SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports",
    "volumes", "depends_on", "restart", "read_only", "user", "cap_drop", "cap_add",
    "security_opt", "tmpfs", "healthcheck", "stop_grace_period", "stop_signal",
    "networks", "init", "mem_limit", "cpus", "pids_limit", "ulimits", "logging",
    "labels", "container_name", "working_dir", "deploy", "expose", "privileged",
    "cgroup", "configs", "secrets", "profiles",
}


def cmd_compose(file):
    doc = load_all(file)
    problems = []
    if len(doc) != 1 or not isinstance(doc[0], dict):
        fail(f"{file}: one YAML document", ["not one mapping"])
    doc = doc[0]
    for key in doc:
        if key not in {"name", "services", "volumes", "networks", "configs", "secrets"}:
            problems.append(f"top-level key {key!r} is not Compose's")
    services = doc.get("services") or {}
    volumes = set(doc.get("volumes") or {})
    base = Path(file).parent
    for name, svc in services.items():
        for key in svc:
            if key not in SERVICE_KEYS:
                problems.append(f"services.{name}.{key}: not a Compose service key this check knows")
        if "image" not in svc and "build" not in svc:
            problems.append(f"services.{name}: neither image nor build")
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                problems.append(f"services.{name}.depends_on: no service {dep}")
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source")
            if src.startswith((".", "/")):
                if src.startswith(".") and not (base / src).exists():
                    problems.append(f"services.{name}.volumes: {src} does not exist beside {file}")
            elif src not in volumes:
                problems.append(f"services.{name}.volumes: named volume {src} is not declared")
        for p in svc.get("ports") or []:
            if not re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+(:\d+)?(/(tcp|udp))?", str(p)):
                problems.append(f"services.{name}.ports: {p!r} is not a port mapping")
    what = f"{len(services)} services: known keys, declared volumes, bind sources exist"
    if problems:
        fail(what, problems)
    ok(what)


# ---------------------------------------------------------------- dashboard

PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "by", "without", "histogram_quantile", "le",
    "max", "min", "avg", "count", "topk", "bottomk", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "offset", "time", "vector", "clamp_min",
    "clamp_max", "delta", "deriv", "abs", "label_replace", "max_over_time",
    "min_over_time", "avg_over_time", "changes", "resets", "bool", "scalar",
    "absent", "sort", "sort_desc", "round", "ceil", "floor", "timestamp",
}


def dashboard_queries(dash):
    """Every PromQL expression of a Grafana dashboard: panel targets (rows'
    nested panels included) and templating queries."""
    out = []

    def panels(ps):
        for p in ps:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"], None))
            panels(p.get("panels", []))

    panels(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and q:
            # Grafana's label_values(EXPR, LABEL): EXPR is PromQL.
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
            if m:
                out.append((f"variable {var.get('name')}", m.group(1), m.group(2)))
            else:
                out.append((f"variable {var.get('name')}", q, None))
    return out


# Grafana's variables, as a query sent by hand would spell them.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$model": ".*",
    "$version": ".*",
}


def concrete(expr):
    for k in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(k, GRAFANA_VARS[k])
    return expr


def exposition(text):
    """Families and their labels from a Prometheus text exposition: every
    `# TYPE` line (a family with no sample yet still counts), and the label
    names seen on samples."""
    families, labels = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            families[name] = kind
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*?)\})? ", line)
        if m and m.group(3):
            labels.setdefault(m.group(1), set()).update(
                re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3))
            )
    series = {}
    for name, kind in families.items():
        names = [name] + ([f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [])
        for n in names:
            series[n] = set(labels.get(n, set()))
    return series


def cmd_dashboard(dash_file, metrics_file):
    dash = json.loads(Path(dash_file).read_text(encoding="utf-8"))
    series = exposition(Path(metrics_file).read_text(encoding="utf-8"))
    if not series:
        fail(f"{metrics_file}: an exposition", ["no # TYPE line"])
    queries = dashboard_queries(dash)
    problems, used = [], set()
    for title, expr, var_label in queries:
        # Label matchers and grouping clauses name labels, not metrics.
        stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        label_sets = re.findall(r"\{([^}]*)\}", stripped)
        grouping = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", stripped)
        body = re.sub(r"\{[^}]*\}", "", stripped)
        body = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", body)
        body = re.sub(r"\[[^\]]*\]", "", body)  # range selectors
        body = re.sub(r"\$\{?\w+\}?", "", body)  # Grafana variables
        names = {
            w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", body)
            if w not in PROMQL_WORDS and not re.fullmatch(r"\d+|e\d*", w)
        }
        metric_names = [n for n in names if n.startswith("ward_")]
        if not metric_names:
            problems.append(f"{title}: {expr!r} names no ward_ metric")
        for n in names:
            if n not in series:
                problems.append(f"{title}: {n} is not in ward's /metrics")
        used.update(metric_names)
        known_labels = set().union(*(series.get(n, set()) for n in metric_names)) | {"job", "instance", "__name__", "le"}
        for ls in label_sets:
            for lab in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", ls):
                if lab not in known_labels:
                    problems.append(f"{title}: label {lab} is on none of {sorted(metric_names)}")
        if var_label and var_label not in known_labels:
            problems.append(f"{title}: label_values asks for {var_label}, on none of {sorted(metric_names)}")
        for g in grouping:
            for lab in [x.strip() for x in g.split(",") if x.strip()]:
                if lab not in known_labels:
                    problems.append(f"{title}: grouping label {lab} is on none of {sorted(metric_names)}")
    what = (
        f"{Path(dash_file).name}: {len(queries)} queries naming {len(used)} metric names and their labels, "
        f"against ward's /metrics ({len(series)} names)"
    )
    if problems or not queries:
        fail(what, problems or ["no queries"])
    ok(what)


def cmd_grafana(compose_dir):
    """The dashboard and Grafana's provisioning agree with each other and with
    the Compose file: data source uid, dashboards path, unique panel ids."""
    base = Path(compose_dir)
    dash_file = base / "grafana/ward-dashboard.json"
    dash = json.loads(dash_file.read_text(encoding="utf-8"))
    sources = [d for f in sorted((base / "grafana/provisioning/datasources").glob("*.yml")) for d in load_all(f)]
    uids = {ds["uid"] for doc in sources for ds in doc.get("datasources", [])}
    providers = [
        pr for f in sorted((base / "grafana/provisioning/dashboards").glob("*.yml"))
        for doc in load_all(f) for pr in doc.get("providers", [])
    ]
    compose = load_all(base / "docker-compose.yml")[0]
    mounts = [v.split(":") for v in compose["services"]["grafana"]["volumes"] if isinstance(v, str)]
    problems = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            problems.append(f"{dash_file}: no {key}")
    ids, all_panels = [], []

    def walk(ps):
        for p in ps:
            all_panels.append(p)
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for p in all_panels:
        ids.append(p.get("id"))
        if "gridPos" not in p:
            problems.append(f"panel {p.get('title')}: no gridPos")
        for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]:
            if isinstance(ds, dict) and ds.get("type") == "prometheus" and ds.get("uid") not in uids:
                problems.append(f"panel {p.get('title')}: data source uid {ds.get('uid')} is not provisioned ({sorted(uids)})")
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    for pr in providers:
        path = pr.get("options", {}).get("path")
        if not any(m[0].endswith("ward-dashboard.json") and m[1].startswith(f"{path}/") for m in mounts):
            problems.append(f"dashboard provider path {path} is not where docker-compose.yml mounts the dashboard")
    what = (
        f"{dash_file.name}: {len(all_panels)} panels, data source uid {sorted(uids)} provisioned, "
        f"provider path matches the Compose mount"
    )
    if problems or not providers or not uids:
        fail(what, problems or ["no provider or data source"])
    ok(what)


def cmd_rules(dash_file, out_file):
    """Writes the dashboard's queries as recording rules, for `promtool
    check rules` to parse."""
    dash = json.loads(Path(dash_file).read_text(encoding="utf-8"))
    rules = [
        {"record": f"ward_dashboard_check:{i}", "expr": concrete(expr)}
        for i, (_, expr, _) in enumerate(dashboard_queries(dash))
    ]
    Path(out_file).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))


def cmd_promql(dash_file, prom_url):
    """Runs every dashboard query against a real Prometheus that scrapes ward:
    each must evaluate; the count of those with no series yet is reported."""
    import urllib.parse
    import urllib.request

    dash = json.loads(Path(dash_file).read_text(encoding="utf-8"))
    problems, empty, queries = [], [], dashboard_queries(dash)
    for title, expr, _ in queries:
        url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": concrete(expr)})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except Exception as e:  # an HTTP 400 carries PromQL's complaint
            detail = e.read().decode() if hasattr(e, "read") else str(e)
            problems.append(f"{title}: {detail}")
            continue
        if body.get("status") != "success":
            problems.append(f"{title}: {body}")
        elif not body["data"]["result"]:
            empty.append(title)
    what = (
        f"{len(queries)} dashboard queries evaluated by a real Prometheus scraping ward "
        f"({len(queries) - len(empty)} with data"
        + (f"; none yet: {', '.join(empty)}" if empty else "")
        + ")"
    )
    if problems:
        fail(what, problems)
    ok(what)


# ------------------------------------------- the pods' containers under Docker


def quantity_bytes(q):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}
    for u, f in units.items():
        if str(q).endswith(u):
            return int(float(str(q)[: -len(u)]) * f)
    return int(q)


def container_docker_args(container, pod_security, volumes, mounts_for):
    """`docker run` options that give one container of a pod spec what the
    kubelet would: its user, read-only root, dropped capabilities,
    no_new_privs, memory limit, environment, and its volumes (emptyDir as
    tmpfs, the rest from `mounts_for`)."""
    sc = {**pod_security, **container.get("securityContext", {})}
    args = []
    if "runAsUser" in sc:
        args += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges:true"]
    mem = container.get("resources", {}).get("limits", {}).get("memory")
    if mem:
        args += ["--memory", str(quantity_bytes(mem))]
    for e in container.get("env", []):
        args += ["-e", f"{e['name']}={e['value']}"]
    by_name = {v["name"]: v for v in volumes}
    for m in container.get("volumeMounts", []):
        vol = by_name[m["name"]]
        if "emptyDir" in vol:
            args += ["--tmpfs", m["mountPath"]]
        else:
            args += mounts_for(vol, m)
    return args


def cmd_docker_args(kind, file, out_file):
    """Writes, one per line, the `docker run` options and then (after a line
    `--`) the arguments that run the Deployment's (kind `deployment`, FILE
    the rendered base) or the serving runtime's (kind `kserve`) container."""
    docs = load_all(file)
    if kind == "deployment":
        dep = next(d for d in docs if d["kind"] == "Deployment")
        cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        tmp = Path(out_file).parent

        def mounts_for(vol, m):
            if "configMap" in vol:
                d = tmp / f"configmap-{vol['name']}"
                d.mkdir(exist_ok=True)
                for key, text in cms[vol["configMap"]["name"]]["data"].items():
                    (d / key).write_text(text)
                return ["-v", f"{d}:{m['mountPath']}:ro"]
            if "persistentVolumeClaim" in vol:
                return ["-v", f"{ROOT / 'models'}:{m['mountPath']}:ro"]
            raise SystemExit(f"no stand-in for volume {vol['name']}")

        opts = container_docker_args(container, pod.get("securityContext", {}), pod.get("volumes", []), mounts_for)
    else:
        rt = next(d for d in docs if d["kind"].endswith("ServingRuntime"))
        container = next(c for c in rt["spec"]["containers"] if c["name"] == "kserve-container")
        opts = container_docker_args(container, {}, rt["spec"].get("volumes", []), None)
        # What KServe adds: the storage initializer's copy of the storageUri.
        opts += ["-v", f"{ROOT / 'models'}:{KSERVE_MODEL_DIR}:ro"]
    Path(out_file).write_text("\n".join(opts + ["--"] + container.get("args", [])) + "\n")


def cmd_models_ready(url):
    """Every model version of the ward at URL is READY."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as r:
        d = json.load(r)
    ms = d if isinstance(d, list) else d["models"]
    bad = [f"{m['model_id']}@{m['version']} {m['state']}: {m.get('reason')}" for m in ms if m["state"] != "READY"]
    missing = sorted({layer for m in ms for layer in m.get("sandbox_missing", [])})
    what = (
        f"{len(ms) - len(bad)} of {len(ms)} versions READY, sandbox missing {len(missing)} layers "
        f"({', '.join(missing) or 'none'})"
    )
    if bad or not ms:
        fail(what, bad or ["no model versions"])
    ok(what)


# ------------------------------------------------------------ ward.yaml paths


def cmd_wardyaml_image(files):
    src = (ROOT / "supervisor/src/launch/server_image.rs").read_text(encoding="utf-8")
    consts = dict(re.findall(r'const (BIN_DIR|ORT_DIR|VENV): &str = "([^"]+)";', src))
    pin = re.search(r"^onnxruntime==(\S+)", (ROOT / "models/requirements.txt").read_text(), re.M)
    problems = []
    if len(consts) != 3 or not pin:
        fail("the image's paths", ["cannot find BIN_DIR, ORT_DIR, VENV in server_image.rs or the onnxruntime pin"])
    want = {
        "binary": f"{consts['BIN_DIR']}/ward-worker",
        "python": f"{consts['VENV']}/bin/python",
        "onnxruntime_library": f"{consts['ORT_DIR']}/libonnxruntime.so.{pin.group(1)}",
    }
    for file in files:
        worker = (yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}).get("worker", {})
        for k, v in want.items():
            if worker.get(k) != v:
                problems.append(f"{file}: worker.{k} is {worker.get(k)!r}, the image has {v!r}")
    what = f"{len(files)} ward.yaml(s) for the server image: worker paths match server_image.rs and onnxruntime=={pin.group(1)}"
    if problems:
        fail(what, problems)
    ok(what)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "k8s":
        cmd_k8s(args[0], args[1:])
    elif cmd == "kserve":
        cmd_kserve(args)
    elif cmd == "compose":
        cmd_compose(args[0])
    elif cmd == "dashboard":
        cmd_dashboard(args[0], args[1])
    elif cmd == "models-ready":
        cmd_models_ready(args[0])
    elif cmd == "docker-args":
        cmd_docker_args(args[0], args[1], args[2])
    elif cmd == "grafana":
        cmd_grafana(args[0])
    elif cmd == "rules":
        cmd_rules(args[0], args[1])
    elif cmd == "promql":
        cmd_promql(args[0], args[1])
    elif cmd == "wardyaml-image":
        cmd_wardyaml_image(args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
