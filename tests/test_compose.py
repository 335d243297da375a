"""The production stack (docker-compose.yml, Dockerfile, deploy/) checked without a Docker engine.

Structure, health checks, dependencies, published ports, networks and secrets are read from the
files; the Grafana dashboard's SQL runs against the real migrations in chDB; ``docker compose
config`` validates the file too when the compose plugin is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from quant_core.telemetry import COUNTERS
from quant_resources.migrations import load

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

DATA_SERVICES = {"clickhouse", "postgres", "minio", "nats", "redis"}
DAGSTER_SERVICES = {"dagster-code", "dagster-webserver", "dagster-daemon"}
LONG_RUNNING = DATA_SERVICES | DAGSTER_SERVICES | {"grafana", "api"}
ONE_SHOTS = {"minio-init", "nats-init", "warehouse-migrate"}
UI_PORTS = {
    "dagster-webserver": ("3000", "3000"),
    "grafana": ("3001", "3000"),
    "api": ("8000", "8000"),
}
CODE_SERVER_PORT = 4000
# Variables whose value is a secret: compose must require them (`:?`), never default them.
SECRET = re.compile(r"PASSWORD|SECRET|_KEY$|TOKEN")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; `$$` is a literal $.
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


def _raw() -> str:
    return COMPOSE.read_text()


def _compose() -> dict:
    return yaml.safe_load(_raw())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match[1]] = match[2].split(" #")[0].strip()
    return values


def _strings(node):
    """Every key and scalar of the parsed file (what compose interpolates; not comments)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif node is not None:
        yield str(node)


def _references() -> list[re.Match[str]]:
    return [m for text in _strings(_compose()) for m in VARIABLE.finditer(text)]


def _referenced() -> dict[str, set[str]]:
    """Variable name -> the operators it is referenced with ('' for plain ${VAR})."""
    found: dict[str, set[str]] = {}
    for match in _references():
        found.setdefault(match["name"], set()).add(match["op"] or "")
    return found


def _test_env() -> dict[str, str]:
    """A complete .env for the stack: .env.example with every empty value filled in."""
    env = _env_example()
    for name in _referenced():
        if not env.get(name):
            env[name] = f"test{name.lower().replace('_', '')}x9"
    return env


def interpolate(node, env: dict[str, str]):
    """Compose's interpolation (the subset the file uses), over the parsed file."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"]
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"required variable {name} is missing: {arg}")
        if op == ":-" and not value:
            return arg
        if op == "-" and value is None:
            return arg
        return value or ""

    if isinstance(node, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, str):
        return VARIABLE.sub(one, node).replace("$$", "$")
    return node


def _resolved() -> dict:
    return interpolate(_compose(), _test_env())


def _depends(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    return (
        {name: {"condition": "service_started"} for name in deps}
        if isinstance(deps, list)
        else deps
    )


def test_every_service_of_the_stack_is_defined() -> None:
    assert set(_services()) == LONG_RUNNING | ONE_SHOTS


def test_long_running_services_restart_and_have_health_checks() -> None:
    services = _services()
    for name in LONG_RUNNING:
        service = services[name]
        assert service.get("restart") == "unless-stopped", name
        test = service.get("healthcheck", {}).get("test")
        assert isinstance(test, list) and len(test) >= 2, f"{name}: no health check command"
        assert test[0] in ("CMD", "CMD-SHELL"), name
        assert all(isinstance(part, str) and part for part in test), name
        assert not service["healthcheck"].get("disable"), name
    for name in ONE_SHOTS:
        assert services[name].get("restart") == "no", f"{name} is a one-shot: it must not restart"


def test_health_checks_probe_the_right_thing() -> None:
    def command(name: str) -> str:
        return " ".join(_services()[name]["healthcheck"]["test"][1:])

    assert "8123/ping" in command("clickhouse") or "SELECT 1" in command("clickhouse")
    assert "pg_isready" in command("postgres")
    assert "mc ready local" in command("minio") or "/minio/health/live" in command("minio")
    assert "8222/healthz" in command("nats")
    assert "-m" in _services()["nats"]["command"] and "8222" in _services()["nats"]["command"]
    assert "-js" in _services()["nats"]["command"]
    assert "/api/health" in command("grafana")
    assert f"grpc-health-check -p {CODE_SERVER_PORT}" in command("dagster-code")
    assert "localhost:3000" in command("dagster-webserver")
    assert "liveness-check" in command("dagster-daemon")
    assert "redis-cli ping" in command("redis") and "REDISCLI_AUTH" in command("redis")
    assert "localhost:8000/v1/health" in command("api")


def test_depends_on_references_existing_services_with_sound_conditions() -> None:
    services = _services()
    for name, service in services.items():
        for dep, spec in _depends(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name}: {dep} has no health check"
            elif condition == "service_completed_successfully":
                assert dep in ONE_SHOTS, f"{name}: {dep} is not a one-shot"
            else:
                pytest.fail(f"{name} -> {dep}: condition {condition!r} does not wait for readiness")

    # No cycles, and every one-shot is awaited by somebody or awaits its service.
    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        for dep in _depends(services[name]):
            visit(dep, (*path, name))

    for name in services:
        visit(name, ())
    awaited = {
        dep
        for service in services.values()
        for dep, spec in _depends(service).items()
        if spec["condition"] == "service_completed_successfully"
    }
    assert awaited == ONE_SHOTS
    code = _depends(services["dagster-code"])
    assert {"clickhouse", "postgres", "minio-init", "nats-init"} <= set(code)
    daemon = _depends(services["dagster-daemon"])
    assert {"postgres", "dagster-code", "warehouse-migrate"} <= set(daemon)
    assert set(_depends(services["dagster-webserver"])) >= {"postgres", "dagster-code"}


def test_only_the_uis_and_the_api_publish_ports_and_only_their_ports() -> None:
    services = _resolved()["services"]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == set(UI_PORTS)
    for name, (host_port, container_port) in UI_PORTS.items():
        ports = services[name]["ports"]
        assert len(ports) == 1, name
        parts = str(ports[0]).split(":")
        assert parts[-2:] == [host_port, container_port], f"{name}: {ports[0]}"
        # Loopback unless the operator chooses otherwise (the Dagster UI has no login).
        assert parts[0] == "127.0.0.1", f"{name}: {ports[0]}"
    for name in DATA_SERVICES:
        assert "ports" not in services[name] and "network_mode" not in services[name], name


def test_data_services_are_only_on_the_internal_network() -> None:
    compose = _compose()
    networks = compose["networks"]
    internal = {name for name, spec in networks.items() if (spec or {}).get("internal")}
    assert internal, "no internal network"
    for name, service in compose["services"].items():
        joined = set(service.get("networks") or [])
        assert joined, f"{name} joins no explicit network"
        assert joined <= set(networks), name
        if name in DATA_SERVICES | ONE_SHOTS - {"warehouse-migrate"}:
            assert joined <= internal, f"{name} must not have a route out"
        if service.get("ports"):
            # Ports are not published on internal-only networks.
            assert joined - internal, f"{name} publishes ports but has no external network"
    # Everything the code server talks to shares a network with it.
    code = set(compose["services"]["dagster-code"]["networks"])
    for name in DATA_SERVICES:
        assert code & set(compose["services"][name]["networks"]), name


def test_named_volumes_for_all_state() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    expected_mounts = {
        "clickhouse": "/var/lib/clickhouse",
        "postgres": "/var/lib/postgresql/data",
        "minio": "/data",
        "nats": "/data",
        "grafana": "/var/lib/grafana",
        "dagster-code": "/var/lib/quant",
        "redis": "/data",
    }
    for name, target in expected_mounts.items():
        mounts = compose["services"][name].get("volumes") or []
        named = {m.split(":")[1]: m.split(":")[0] for m in mounts if not m.startswith(".")}
        assert target in named, f"{name}: no named volume on {target}"
        assert named[target] in declared, name
    # Bind mounts of config files point at files of the repo.
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            if mount.startswith("./"):
                assert (ROOT / mount.split(":")[0]).exists(), f"{name}: {mount}"


def test_every_variable_is_documented_in_env_example() -> None:
    documented = _env_example()
    missing = sorted(set(_referenced()) - set(documented))
    assert not missing, f"not in .env.example: {missing}"


def test_secrets_are_required_from_env_never_defaulted() -> None:
    for name, ops in _referenced().items():
        if SECRET.search(name) and not name.startswith(("ALPACA_", "BINANCE_")):
            assert ops == {":?"}, f"{name} must be referenced as ${{{name}:?...}} ({ops})"
        for match in _references():
            if match["name"] == name and match["op"] == ":?":
                assert name in match["arg"] and "in .env" in match["arg"], match[0]
    # The compose file refuses to interpolate without them.
    env = _test_env()
    for name, ops in _referenced().items():
        if ":?" in ops:
            with pytest.raises(KeyError, match=name):
                interpolate(_compose(), {**env, name: ""})
    # Example values of the new secrets are empty: .env.example holds no password.
    example = _env_example()
    for name in _referenced():
        if SECRET.search(name) and name in example and not name.startswith("ALPACA_"):
            assert example[name] == "", f".env.example gives {name} a value"


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, str(i)))
    else:
        yield path, node


def test_no_literal_passwords_anywhere_in_the_compose_file() -> None:
    for path, value in _walk(_compose()):
        text = str(value)
        key = path[-1] if path else ""
        # key: value pairs (environment mappings, anything else).
        if SECRET.search(key.upper()) and not key.startswith(("x-", "ALPACA_", "BINANCE_")):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", text), f"{'.'.join(path)}: {text!r}"
        # KEY=value strings (list-form environment, commands).
        for match in re.finditer(r"\b([A-Z0-9_]*(?:PASSWORD|SECRET)[A-Z0-9_]*)=(\S+)", text):
            assert match[2].startswith(("${", "$$", '"$')), f"{'.'.join(path)}: {match[0]}"
        # user:password@host URLs take the password from a variable.
        for url in re.findall(r"[a-z+]+://\S+", text):
            password = urlsplit(url).password if "@" in url else None
            assert password is None or password.startswith("${"), f"{'.'.join(path)}: {url}"
        bare = VARIABLE.sub("", text)
        assert not re.search(r"(?i)password\s*[:=]\s*[^$\s\"]", bare), f"{'.'.join(path)}: {text}"


def test_dagster_services_get_the_deployment_environment() -> None:
    services = _resolved()["services"]
    env = _test_env()
    for name in (*DAGSTER_SERVICES, "warehouse-migrate"):
        service = services[name]
        assert service["build"]["dockerfile"] == "Dockerfile", name
        variables = service["environment"]
        assert variables["DAGSTER_HOME"] == "/opt/dagster/home", name
        assert variables["DAGSTER_PG_HOST"] == "postgres", name
        assert variables["DAGSTER_PG_PORT"] == "5432", name
        assert variables["DAGSTER_PG_PASSWORD"] == env["DAGSTER_PG_PASSWORD"], name
        for key in ("DAGSTER_PG_USER", "DAGSTER_PG_DB"):
            assert variables[key] == env[key], name
    for name in ("dagster-code", "warehouse-migrate"):
        variables = services[name]["environment"]
        clickhouse = urlsplit(variables["CLICKHOUSE_URL"])
        assert (clickhouse.scheme, clickhouse.hostname, clickhouse.port) == (
            "http",
            "clickhouse",
            8123,
        )
        assert clickhouse.path == "/quant"
        assert clickhouse.username == env["CLICKHOUSE_USER"]
        assert clickhouse.password == env["CLICKHOUSE_PASSWORD"]
        postgres = urlsplit(variables["POSTGRES_URL"])
        assert (postgres.hostname, postgres.port, postgres.path) == (
            "postgres",
            5432,
            f"/{env['QUANT_PG_DB']}",
        )
        assert variables["LAKE_URL"] == f"s3://{env['LAKE_BUCKET']}/lake"
        assert variables["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert variables["AWS_ACCESS_KEY_ID"] == env["LAKE_ACCESS_KEY_ID"]
        assert variables["AWS_SECRET_ACCESS_KEY"] == env["LAKE_SECRET_ACCESS_KEY"]
        assert variables["AWS_REGION"]
        assert variables["NATS_URL"] == "nats://nats:4222"
        assert "QUANT_CLICKHOUSE_CLUSTER" in variables
    # The UI and the daemon get the instance, not the data credentials.
    for name in ("dagster-webserver", "dagster-daemon"):
        assert "CLICKHOUSE_URL" not in services[name]["environment"], name
    # Every database and user the Dagster services use is created by the postgres service.
    postgres_env = services["postgres"]["environment"]
    assert postgres_env["DAGSTER_PG_DB"] == env["DAGSTER_PG_DB"]
    assert postgres_env["QUANT_PG_DB"] == env["QUANT_PG_DB"]


def test_dagster_commands_and_workspace() -> None:
    services = _services()
    assert services["dagster-code"]["command"] == [
        "dagster",
        "api",
        "grpc",
        "-m",
        "quant_definitions",
        "-h",
        "0.0.0.0",
        "-p",
        str(CODE_SERVER_PORT),
    ]
    assert services["dagster-webserver"]["command"] == [
        "dagster-webserver",
        "-h",
        "0.0.0.0",
        "-p",
        "3000",
        "-w",
        "/opt/dagster/workspace.yaml",
    ]
    assert services["dagster-daemon"]["command"][:2] == ["dagster-daemon", "run"]
    migrate = " ".join(services["warehouse-migrate"]["command"])
    assert "dagster asset materialize" in migrate
    assert "--select clickhouse_schema" in migrate and "--select postgres_schema" in migrate

    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    assert grpc["host"] == "dagster-code" and grpc["host"] in services
    assert grpc["port"] == CODE_SERVER_PORT
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert grpc["location_name"] == project["tool"]["dagster"]["code_location_name"]


def test_migrate_command_targets_the_last_migration_of_each_database(tmp_path: Path) -> None:
    """The shell of warehouse-migrate, run here with `dagster` replaced by `echo`."""
    script = _resolved()["services"]["warehouse-migrate"]["command"][-1]
    script = script.replace("dagster asset materialize", "echo materialize")
    done = subprocess.run(
        ["sh", "-ec", script],
        env={"QUANT_MIGRATIONS_DIR": str(ROOT / "migrations"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"--select clickhouse_schema --partition {load('clickhouse')[-1].key}")
    assert lines[1].endswith(f"--select postgres_schema --partition {load('postgres')[-1].key}")


def test_dockerfile_installs_the_project_and_its_runtime_files() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    stages = [x for x in lines if x.startswith("FROM")]
    assert stages == ["FROM python:3.11-slim-bookworm AS build", "FROM python:3.11-slim-bookworm"]
    # The build stage compiles quant_core's C modules into a wheel; the final stage installs
    # that wheel, pinned by constraints.txt, and keeps no compiler.
    assert re.search(r"pip wheel [^\n]*--no-deps [^\n]*\.(\s|$)", dockerfile)
    assert re.search(r"pip install -c (\S*)constraints\.txt /tmp/wheels/\*\.whl", dockerfile)
    assert "COPY --from=build /wheels /tmp/wheels" in dockerfile
    final = dockerfile[dockerfile.rindex("\nFROM ") :]
    assert "apt-get install" not in final, "the final image must not keep the compiler"
    assert not re.search(r"pip install[^\n]*\s-e\s", dockerfile), "install must not be editable"
    copy = re.search(r"^COPY migrations (\S+)$", dockerfile, re.M)
    assert copy, "migrations/ is not copied"
    assert re.search(rf"QUANT_MIGRATIONS_DIR={re.escape(copy[1])}\b", dockerfile)
    universe = re.search(r"^COPY configs (\S+)$", dockerfile, re.M)
    assert universe and f"QUANT_UNIVERSE_FILE={universe[1]}/universe.txt" in dockerfile
    assert "COPY dagster.yaml /opt/dagster/home/dagster.yaml" in dockerfile
    assert "DAGSTER_HOME=/opt/dagster/home" in dockerfile
    assert "COPY deploy/workspace.yaml /opt/dagster/workspace.yaml" in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"

    # Every COPY source survives .dockerignore (a whitelist: `*` then `!path` lines).
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "**/.env" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", dockerfile, re.M):
        for item in source.split():
            assert item.rstrip("/") in allowed, f"COPY {item} is excluded by .dockerignore"
            assert (ROOT / item).exists(), item
            copied.add(item.rstrip("/"))
    # Every product package is in the image (the code server loads quant_definitions); the
    # development tooling (quant_dev) is not.
    product = {"quant_core", "quant_resources", "quant_assets", "sensors", "quant_definitions"}
    assert product | {"quant_cli", "quant_api"} <= copied, sorted(copied)
    assert "quant_dev" not in copied


def test_init_scripts_parse_and_get_their_variables() -> None:
    services = _services()
    postgres = services["postgres"]
    assert (
        "./deploy/postgres/init.sh:/docker-entrypoint-initdb.d/10-quant.sh:ro"
        in (postgres["volumes"])
    )
    minio_init = services["minio-init"]
    for script, service, shell in (
        (DEPLOY / "postgres" / "init.sh", postgres, "bash"),
        (DEPLOY / "minio" / "init.sh", minio_init, "sh"),
    ):
        subprocess.run([shell, "-n", str(script)], check=True)
        required = set(re.findall(r"\$\{([A-Z_]+):\?\}", script.read_text()))
        assert required, script
        assert required <= set(service["environment"]), f"{script}: {required}"
    assert "mc mb --ignore-existing" in (DEPLOY / "minio" / "init.sh").read_text()
    nats_init = " ".join(services["nats-init"]["command"])
    assert "stream add" in nats_init and "'v1.market.>'" in nats_init
    # The ClickHouse user of Grafana reads its password from the server's environment.
    users = ET.parse(DEPLOY / "clickhouse" / "users.d" / "grafana.xml").getroot()
    password = users.find("users/grafana/password")
    assert password is not None and password.text is None
    assert password.get("from_env") in services["clickhouse"]["environment"]
    profile = users.find("users/grafana/profile").text
    assert users.find(f"profiles/{profile}/readonly").text in ("1", "2")


def _dashboard() -> dict:
    return json.loads((PROVISIONING / "dashboards" / "quant.json").read_text())


def _sql(dashboard: dict) -> list[str]:
    return [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]


def test_grafana_provisioning_parses_and_matches_the_stack() -> None:
    services = _services()
    grafana = services["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["host"] == "clickhouse" and source["jsonData"]["port"] == 8123
    assert source["jsonData"]["defaultDatabase"] == "quant"
    password = source["secureJsonData"]["password"]
    assert (
        password.startswith("$") and password.lstrip("${").rstrip("}") in (grafana["environment"])
    )

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"

    dashboard = _dashboard()
    targets = [t for p in dashboard["panels"] for t in p["targets"]]
    assert targets and all(t["datasource"]["uid"] == source["uid"] for t in targets)
    sql = "\n".join(_sql(dashboard))
    assert "FROM bars_1m FINAL" in sql and "FROM telemetry" in sql
    metrics = set(re.findall(r"'([a-z0-9_]+)'", sql)) - {"1m"}
    assert {"lag_p50_ms", "lag_p99_ms", "messages", "reconnects", "gaps_opened"} <= metrics
    assert "trades_repaired" in metrics
    # Only metrics the live pipeline writes (quant_core.telemetry and its gauges).
    emitted = {*COUNTERS, "lag_p50_ms", "lag_p99_ms", "queue_depth", "open_gaps"}
    assert metrics <= emitted, metrics - emitted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


GRAFANA_MACROS = {
    r"\$__timeFilter\((\w+)\)": r"\1 >= now64(3) - INTERVAL 1 DAY",
    r"\$__timeInterval\((\w+)\)": r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)",
    r"\$__interval_s": "60",
    r"\$\{source:singlequote\}": "'binance'",
    r"\$\{symbol:singlequote\}": "'BTCUSDT'",
}
CHDB_SCRIPT = r"""
import json, sys, tempfile, chdb
from chdb import session
queries, migrations = json.load(sys.stdin)
s = session.Session(tempfile.mkdtemp())
s.query("CREATE DATABASE quant")
s.query("USE quant")
for statement in migrations:
    s.query(statement)
s.query("INSERT INTO bars_1m (source, symbol, ts, ts_close, session_date, session, open, high, "
        "low, close, volume, quote_volume, vwap, trade_count, taker_buy_volume, "
        "taker_buy_quote_volume, version) VALUES ('binance', 'BTCUSDT', now64(3), now64(3), "
        "today(), 'regular', 1, 2, 0.5, 1.5, 10, 15, 1.5, 3, 4, 6, 1)")
s.query("INSERT INTO telemetry SELECT 'binance', 'ALL', 'live', 's1', now64(3), m, 7 "
        "FROM (SELECT arrayJoin(['messages', 'lag_p50_ms', 'lag_p99_ms', 'reconnects', "
        "'gaps_opened', 'trades_repaired', 'drops', 'queue_depth']) AS m)")
out = []
for q in queries:
    out.append(s.query(q, "JSONCompact").bytes().decode())
print(json.dumps(out))
"""


def test_dashboard_queries_run_on_the_real_schema() -> None:
    """Every panel and variable query, macros expanded, against the migrations in chDB."""
    dashboard = _dashboard()
    queries = _sql(dashboard) + [v["query"] for v in dashboard["templating"]["list"]]
    expanded = []
    for query in queries:
        for pattern, replacement in GRAFANA_MACROS.items():
            query = re.sub(pattern, replacement, query)
        assert "$" not in query, query
        expanded.append(query)
    migrations = [s for m in load("clickhouse") for s in m.statements]
    done = subprocess.run(
        [sys.executable, "-c", CHDB_SCRIPT],
        input=json.dumps([expanded, migrations]),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(r) for r in json.loads(done.stdout)]
    for query, result in zip(queries, results, strict=True):
        assert result["rows"] >= 1, f"no rows from:\n{query}"


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed (structure checked above)")
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _test_env().items()))
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_api_service_gets_redis_tokens_and_the_data_environment() -> None:
    services = _resolved()["services"]
    env = _test_env()
    api = services["api"]["environment"]
    redis_url = urlsplit(api["REDIS_URL"])
    assert (redis_url.hostname, redis_url.port) == ("redis", 6379)
    assert redis_url.password == env["REDIS_PASSWORD"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == env["REDIS_PASSWORD"]
    # Bound beyond loopback in the container: `quant serve api` refuses that without tokens.
    assert api["QUANT_API_TOKENS"] == env["QUANT_API_TOKENS"]
    assert services["api"]["command"][:3] == ["quant", "serve", "api"]
    for key in ("CLICKHOUSE_URL", "LAKE_URL", "AWS_SECRET_ACCESS_KEY", "DAGSTER_HOME"):
        assert api[key] == services["dagster-code"]["environment"][key], key


def test_redis_persists_into_its_volume_and_the_api_waits_for_it() -> None:
    """The bar streams survive a container's replacement only if redis-server writes its
    append-only file into the named volume: its ``dir`` is the volume's mount point."""
    compose = _compose()
    redis = compose["services"]["redis"]
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose["volumes"]
    config = " ".join(redis["command"])
    assert "appendonly yes" in config and "dir /data" in config
    assert "redis" in LONG_RUNNING and "api" in LONG_RUNNING  # both health-checked above
    depends = _depends(compose["services"]["api"])
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["clickhouse"]["condition"] == "service_healthy"
