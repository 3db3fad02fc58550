"""The layers the README's architecture section names, enforced on the source (every import, also
the ones inside functions, so a deferred import cannot hide a circle or a wrong direction):

    faces        sparklio_assets.cli, api.*, bench/*                  may import anything below
    wiring       assets, checks, jobs, partitions, pipeline, ...,      never the faces
                 sensors.*
    resources    resources.*, comfy_graphs.*                           never wiring or faces
    media        models, planner, overlay, render, soundtrack, ...     no Dagster, no resource, no network

and no import circle anywhere among the project's modules."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sparklio_assets", "resources", "sensors", "api", "comfy_graphs")

FACES = {"sparklio_assets.cli", "api", "bench"}
# Third-party code media must not reach for: the orchestrator, and anything that talks to a network.
MEDIA_FORBIDDEN = ("dagster", "dagster_celery", "dagster_postgres", "celery", "redis", "httpx", "httpx2",
                   "openai", "anthropic", "ollama", "websockets", "requests", "urllib.request", "socket",
                   "fastapi", "uvicorn", "resources", "sensors", "api", "comfy_graphs")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    for path in (ROOT / "bench").glob("*.py"):
        found[_module_name(path)] = path
    return found


SOURCES = _sources()
# The Dagster wiring inside sparklio_assets; every other module there is pure media (so a new
# module is held to the media rules unless it is named here).
WIRING = {f"sparklio_assets.{name}" for name in (
    "assets", "checks", "jobs", "partitions", "pipeline", "definitions", "distributed", "celery_app",
    "step_failures", "store_paths", "comfy_engines", "worker_check", "liveness", "resume")}
MEDIA = {name for name in SOURCES if name.split(".")[0] == "sparklio_assets"} - WIRING - {"sparklio_assets.cli"}


def _resolve(name: str) -> str:
    """The project module an import names (a submodule, or else the package that holds the name)."""
    while name and name not in SOURCES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> set[str]:
    """Every module `module` imports, anywhere in its body, as absolute names."""
    path = SOURCES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def project_edges(module: str) -> set[str]:
    out = {_resolve(name) for name in imports_of(module)}
    return {name for name in out if name and name != module}


def layer_of(module: str) -> str:
    if module in MEDIA:
        return "media"
    if any(module == face or module.startswith(face + ".") for face in FACES):
        return "face"
    if module.split(".")[0] in ("resources", "comfy_graphs"):  # comfy_graphs: the ComfyUI client's graphs
        return "resources"
    return "wiring"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _is_package_init(module: str) -> bool:
    return SOURCES[module].name == "__init__.py"


def test_the_checker_sees_a_circle_and_a_wrong_direction():
    """The rules below would pass vacuously if the parser found no imports: prove it finds them."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "sparklio_assets.jobs" in project_edges("sparklio_assets.pipeline")
    assert "sparklio_assets.assets" in project_edges("sparklio_assets.jobs")
    assert "resources.artifacts" in project_edges("sparklio_assets.store_paths")
    assert layer_of("sparklio_assets.cli") == "face" and layer_of("api.app") == "face"
    assert layer_of("resources.llm.router" if "resources.llm.router" in SOURCES else "resources.tts") == "resources"


def test_no_import_circle():
    # A package's __init__ importing its own submodules is how packages re-export: not a circle.
    graph = {m: {e for e in project_edges(m) if not (_is_package_init(e) and m.startswith(e + "."))}
             for m in SOURCES}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " → ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if layer_of(m) == "media"))
def test_media_imports_no_dagster_no_resource_no_network(module):
    bad = sorted(name for name in imports_of(module)
                 if any(name == f or name.startswith(f + ".") for f in MEDIA_FORBIDDEN))
    bad += sorted(e for e in project_edges(module) if layer_of(e) != "media")
    assert not bad, f"{module} (media) imports {', '.join(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if layer_of(m) == "resources"))
def test_resources_import_no_wiring_and_no_face(module):
    bad = sorted(e for e in project_edges(module) if layer_of(e) in ("wiring", "face"))
    assert not bad, f"{module} (resource) imports {', '.join(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if layer_of(m) == "wiring"))
def test_wiring_never_imports_a_face(module):
    bad = sorted(e for e in project_edges(module) if layer_of(e) == "face")
    assert not bad, f"{module} (wiring) imports {', '.join(bad)}"


def test_ruff_is_clean():
    """The lint rules in pyproject.toml ([tool.ruff]) hold for the whole tree."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
