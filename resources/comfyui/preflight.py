"""Is the GPU worker ready? Every node class and model file the configured graphs need, held
against the worker's `/object_info` (loaders list the files in their model folders) and
`/system_stats` (version, VRAM).

Used by `sparklio worker check` and once when a standard/premium job starts, so a job on an
unready worker fails in seconds with the whole list instead of at scene 1 after a long wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from .protocol import Graph, SystemStats, parse_version

# loader (class, input) → the model folder its choices come from (ComfyUI's folder_paths names)
MODEL_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "models/checkpoints",
    ("LoraLoader", "lora_name"): "models/loras",
    ("ControlNetLoader", "control_net_name"): "models/controlnet",
    ("ADE_LoadAnimateDiffModel", "model_name"): "models/animatediff_models",
    ("ADE_AnimateDiffLoaderGen1", "model_name"): "models/animatediff_models",
    ("ACN_SparseCtrlLoaderAdvanced", "sparsectrl_name"): "models/controlnet",
    ("IPAdapterModelLoader", "ipadapter_file"): "models/ipadapter",
    ("CLIPVisionLoader", "clip_name"): "models/clip_vision",
    ("RIFE VFI", "ckpt_name"): "custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife",
}
CLIP_VISION_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
# IPAdapterUnifiedLoader presets → the files it looks for (IPAdapter_plus utils.get_ipadapter_file),
# for SDXL and SD1.5 models. Checked through IPAdapterModelLoader / CLIPVisionLoader's lists.
IPADAPTER_PRESET_FILES: dict[str, dict[str, str]] = {
    "STANDARD (medium strength)": {"sdxl": "ip-adapter_sdxl_vit-h.safetensors", "sd15": "ip-adapter_sd15.safetensors"},
    "PLUS (high strength)": {"sdxl": "ip-adapter-plus_sdxl_vit-h.safetensors",
                             "sd15": "ip-adapter-plus_sd15.safetensors"},
    "LIGHT - SD1.5 only (low strength)": {"sd15": "ip-adapter_sd15_light_v11.bin"},
    "PLUS FACE (portraits)": {"sdxl": "ip-adapter-plus-face_sdxl_vit-h.safetensors",
                              "sd15": "ip-adapter-plus-face_sd15.safetensors"},
}
MIN_VERSION = (0, 3, 44)  # own prompt ids (the client's cancel/follow logic relies on them)


class Need(BaseModel):
    """One thing a graph needs on the worker."""

    kind: Literal["node", "model"]
    name: str
    folder: str = ""  # models only
    needed_by: list[str] = Field(default_factory=list)
    optional: bool = False  # the engine makes the picture without it (and says so)


class CheckRow(Need):
    present: bool


class PreflightReport(BaseModel):
    """What `worker check` prints and a job records: ready means nothing required is missing."""

    url: str
    version: str = ""
    version_ok: bool = True
    devices: list[str] = Field(default_factory=list)
    vram_total_mb: int = 0
    vram_free_mb: int = 0
    rows: list[CheckRow] = Field(default_factory=list)

    @property
    def missing(self) -> list[CheckRow]:
        return [r for r in self.rows if not r.present and not r.optional]

    @property
    def ready(self) -> bool:
        return self.version_ok and not self.missing

    def missing_for(self, prefix: str) -> list[CheckRow]:
        """Required rows missing for graphs whose name starts with `prefix` (e.g. 'key image')."""
        return [r for r in self.missing if any(g.startswith(prefix) for g in r.needed_by)]

    def summary(self, rows: list[CheckRow] | None = None) -> str:
        """One line: what is missing, where it goes."""
        rows = self.missing if rows is None else rows
        parts = [f"{r.kind} {r.name}" + (f" (in {r.folder})" if r.folder else "") for r in rows]
        if not self.version_ok:
            parts.insert(0, f"ComfyUI {self.version or '?'} is older than {'.'.join(map(str, MIN_VERSION))}")
        return "; ".join(parts) if parts else "nothing missing"

    def table(self) -> str:
        """The report as a plain-text table (what the CLI prints)."""
        lines = [f"worker   {self.url}",
                 f"version  ComfyUI {self.version or '?'}" + ("" if self.version_ok else
                                                             f"  ✗ needs ≥ {'.'.join(map(str, MIN_VERSION))}"),
                 f"device   {', '.join(self.devices) or '?'}",
                 f"VRAM     {self.vram_free_mb / 1024:.1f} GiB free of {self.vram_total_mb / 1024:.1f} GiB", ""]
        width = max([len(r.name) for r in self.rows] + [10])
        lines.append(f"{'':2}{'kind':<6}{'name':<{width + 2}}{'status':<18}needed by")
        for r in sorted(self.rows, key=lambda r: (r.present, r.kind, r.name)):
            status = "present" if r.present else ("missing (optional)" if r.optional else "MISSING")
            mark = "✓" if r.present else ("·" if r.optional else "✗")
            where = f"  → {r.folder}" if r.folder and not r.present else ""
            users = ", ".join(r.needed_by[:2]) + (f" (+{len(r.needed_by) - 2} more)" if len(r.needed_by) > 2 else "")
            lines.append(f"{mark} {r.kind:<6}{r.name:<{width + 2}}{status:<18}{users}{where}")
        lines.append("")
        lines.append("ready" if self.ready else f"NOT READY: {len(self.missing)} missing: {self.summary()}")
        return "\n".join(lines)


def _family(graph: Graph) -> str:
    for node in graph.values():
        if node.get("class_type") == "CheckpointLoaderSimple":
            name = str(node.get("inputs", {}).get("ckpt_name", "")).lower()
            return "sdxl" if "xl" in name else "sd15"
    return "sdxl"


def needs_of(graphs: Mapping[str, Graph], optional_models: Iterable[str] = ()) -> list[Need]:
    """Node classes and model files the graphs use, each with the graphs that need it."""
    optional = set(optional_models)
    found: dict[tuple[str, str], Need] = {}

    def need(kind: str, name: str, graph_name: str, folder: str = "") -> None:
        item = found.setdefault((kind, name), Need(kind=kind, name=name, folder=folder, optional=name in optional))
        if graph_name not in item.needed_by:
            item.needed_by.append(graph_name)

    for graph_name, graph in graphs.items():
        for node in graph.values():
            class_type = node.get("class_type", "")
            need("node", class_type, graph_name)
            inputs = node.get("inputs", {})
            for (loader, input_name), folder in MODEL_INPUTS.items():
                value = inputs.get(input_name)
                if class_type == loader and isinstance(value, str) and value:
                    need("model", value, graph_name, folder)
            if class_type == "IPAdapterUnifiedLoader":
                files = IPADAPTER_PRESET_FILES.get(str(inputs.get("preset")), {})
                if files.get(_family(graph)):
                    need("model", files[_family(graph)], graph_name, "models/ipadapter")
                need("model", CLIP_VISION_H, graph_name, "models/clip_vision")
    return list(found.values())


def _choices(object_info: Mapping[str, Any], class_type: str, input_name: str) -> list[Any]:
    schema = object_info.get(class_type) or {}
    inputs = schema.get("input", {})
    spec = {**inputs.get("optional", {}), **inputs.get("required", {})}.get(input_name)
    if not spec:
        return []
    if isinstance(spec[0], list):
        return spec[0]
    return list((spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}).get("options", []))


def _listed(object_info: Mapping[str, Any], folder: str, name: str) -> bool:
    loaders = [key for key, f in MODEL_INPUTS.items() if f == folder]
    return any(name in _choices(object_info, cls, inp) for cls, inp in loaders)


def check(url: str, stats: SystemStats | None, object_info: Mapping[str, Any], needs: list[Need]) -> PreflightReport:
    """Hold the needs against the worker's answers."""
    rows = []
    for item in needs:
        present = item.name in object_info if item.kind == "node" else _listed(object_info, item.folder, item.name)
        rows.append(CheckRow(**item.model_dump(), present=present))
    report = PreflightReport(url=url, rows=rows)
    if stats is not None:
        report.version = stats.system.comfyui_version
        report.version_ok = parse_version(report.version) >= MIN_VERSION
        report.devices = [d.name or d.type for d in stats.devices]
        report.vram_total_mb = sum(d.vram_total for d in stats.devices) // (1 << 20)
        report.vram_free_mb = sum(d.vram_free for d in stats.devices) // (1 << 20)
    return report
