"""Checking an API-format graph against a server's `/object_info` before it is sent, and reading
the server's own 400 answer, into one list of `NodeIssue`s that names node, class and input."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .protocol import NodeIssue


def _is_link(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], int) \
        and not isinstance(value[1], bool) and isinstance(value[0], (str, int))


def _types_match(received: str, expected: str) -> bool:
    if received == "*" or expected == "*":
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


def _check_value(value: Any, spec: list | tuple, ctx: dict[str, str]) -> list[NodeIssue]:
    """Check one literal input value against its `/object_info` spec ([type, options])."""
    kind = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}

    def issue(type_: str, message: str) -> list[NodeIssue]:
        return [NodeIssue(type=type_, message=message, **ctx)]

    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else opts.get("options", [])
        if opts.get("image_upload"):  # LoadImage: the server checks the file exists (uploads are new)
            return [] if isinstance(value, str) and value else issue("invalid_input_type", "expects a file name")
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices[:12]) + (", …" if len(choices) > 12 else "")
            return issue("value_not_in_list", f"{value!r} is not one of the server's values: [{shown}]")
        return []
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return issue("invalid_input_type", f"expects an integer, got {value!r}")
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return issue("invalid_input_type", f"expects a number, got {value!r}")
    elif kind == "STRING":
        return [] if isinstance(value, str) else issue("invalid_input_type", f"expects a string, got {value!r}")
    elif kind == "BOOLEAN":
        return [] if isinstance(value, bool) else issue("invalid_input_type", f"expects true/false, got {value!r}")
    else:
        return issue("invalid_input_type", f"expects a link from a {kind} output, got the literal {value!r}")
    if "min" in opts and value < opts["min"]:
        return issue("value_smaller_than_min", f"value {value} smaller than min of {opts['min']}")
    if "max" in opts and value > opts["max"]:
        return issue("value_bigger_than_max", f"value {value} bigger than max of {opts['max']}")
    return []


def validate_graph(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[NodeIssue]:
    """Every problem with an API-format graph against a server's `/object_info`; [] when it fits.

    Mirrors ComfyUI's own checks (unknown class, required input missing, bad link, output type
    mismatch, wrong type, out of range, not in list) but reports them all at once, and also checks
    what the server does not: V3 `COMBO` values and VHS's per-format inputs.
    """
    issues: list[NodeIssue] = []
    if not isinstance(graph, Mapping) or not graph:
        return [NodeIssue(node_id="-", type="no_prompt", message="the graph is empty")]
    has_output = False
    for node_id, node in graph.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("inputs", {}), Mapping):
            issues.append(NodeIssue(node_id=str(node_id), type="invalid_prompt", message="is not {class_type, inputs}"))
            continue
        class_type = node.get("class_type")
        if not class_type:
            issues.append(NodeIssue(node_id=str(node_id), type="invalid_prompt", message="has no class_type"))
            continue
        schema = object_info.get(class_type)
        if not schema:
            issues.append(NodeIssue(node_id=str(node_id), class_type=class_type, type="invalid_prompt",
                                    message=f"node class {class_type!r} does not exist on this server "
                                            "(is its custom-node pack installed?)"))
            continue
        has_output = has_output or bool(schema.get("output_node"))
        inputs = node.get("inputs", {})
        declared = {**schema["input"].get("optional", {}), **schema["input"].get("required", {})}
        for name in schema["input"].get("required", {}):
            if name not in inputs:
                issues.append(NodeIssue(node_id=str(node_id), class_type=class_type, input_name=name,
                                        type="required_input_missing", message="required input is missing"))
        extras: dict[str, list] = {}
        for name, spec in declared.items():  # VHS: the chosen format declares more inputs
            formats = spec[1].get("formats") if len(spec) > 1 and isinstance(spec[1], dict) else None
            if formats and inputs.get(name) in formats:
                extras.update({e[0]: e[1:] for e in formats[inputs[name]]})
        for name, value in inputs.items():
            spec = declared.get(name) or extras.get(name)
            if spec is None:
                continue  # ComfyUI ignores undeclared inputs (RIFE's newer keys on older packs)
            ctx = {"node_id": str(node_id), "class_type": class_type, "input_name": name}
            if _is_link(value):
                source = graph.get(str(value[0]))
                if not isinstance(source, Mapping):
                    issues.append(NodeIssue(type="bad_linked_input", **ctx,
                                            message=f"links to node {value[0]!r}, which is not in the graph"))
                    continue
                source_schema = object_info.get(source.get("class_type", ""))
                if not source_schema:
                    continue  # reported on the source node itself
                outputs = source_schema.get("output", [])
                if not 0 <= value[1] < len(outputs):
                    issues.append(NodeIssue(type="bad_linked_input", **ctx,
                                            message=f"links to output {value[1]} of node {value[0]} "
                                                    f"({source['class_type']}), which has {len(outputs)} outputs"))
                    continue
                expected = spec[0] if spec else "*"
                if isinstance(expected, str) and expected != "COMBO" and not _types_match(outputs[value[1]], expected):
                    issues.append(NodeIssue(type="return_type_mismatch", **ctx,
                                            message=f"received {outputs[value[1]]} from node {value[0]} "
                                                    f"({source['class_type']}) but needs {expected}"))
                continue
            issues.extend(_check_value(value, spec, ctx))
    if not has_output and not any(i.type == "invalid_prompt" for i in issues):
        issues.append(NodeIssue(node_id="-", type="prompt_no_outputs", message="the graph has no output node"))
    issues.extend(_cycles(graph))
    return issues


def _cycles(graph: Mapping[str, Any]) -> list[NodeIssue]:
    state: dict[str, int] = {}
    found: list[NodeIssue] = []

    def visit(node_id: str) -> None:
        state[node_id] = 1
        node = graph.get(node_id)
        for value in (node.get("inputs", {}) if isinstance(node, Mapping) else {}).values():
            if _is_link(value) and str(value[0]) in graph:
                src = str(value[0])
                if state.get(src) == 1:
                    found.append(NodeIssue(node_id=node_id, type="dependency_cycle",
                                           message=f"is part of a cycle through node {src}"))
                elif src not in state:
                    visit(src)
        state[node_id] = 2

    for node_id in graph:
        if node_id not in state:
            visit(str(node_id))
    return found


def format_issues(issues: list[NodeIssue], source: str) -> str:
    head = f"graph rejected by {source} ({len(issues)} problem{'s' if len(issues) != 1 else ''})"
    return head + ": " + "; ".join(str(i) for i in issues)


def issues_from_400(body: Any) -> list[NodeIssue]:
    """Turn ComfyUI's 400 body (`error` + `node_errors`) into issues; `error.details` may be ""."""
    issues: list[NodeIssue] = []
    node_errors = body.get("node_errors") if isinstance(body, dict) else None
    if isinstance(node_errors, dict):
        for node_id, entry in node_errors.items():
            for err in entry.get("errors", []):
                extra = err.get("extra_info") or {}
                message = err.get("message", "")
                if err.get("details") and err.get("details") not in message:
                    message += f": {err['details']}"
                issues.append(NodeIssue(node_id=str(node_id), class_type=entry.get("class_type", ""),
                                        input_name=extra.get("input_name", ""), type=err.get("type", "error"),
                                        message=message))
    if not issues:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            details = error.get("details") or ""
            match = re.search(r"#([^']+)'", details)  # "Node ID '#2'"
            issues.append(NodeIssue(node_id=match.group(1) if match else "-", type=error.get("type", "error"),
                                    message=error.get("message", "") + (f" ({details})" if details else "")))
        else:  # servers before v0.3.27: {"error": "no prompt", "node_errors": []}
            issues.append(NodeIssue(node_id="-", type="error", message=str(error or body)))
    return issues
