"""The GPU worker's ComfyUI: wire vocabulary (protocol), graph checks (validation), the HTTP/WS
client, the worker preflight, and the `comfy` Dagster resource. Import from here."""

from .client import ComfyUIClient, WaitHook
from .protocol import (
    OUTPUT_KEYS,
    OWN_PROMPT_ID_SINCE,
    URL_ENV,
    ComfyBusy,
    ComfyCancelStuck,
    ComfyError,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyLostJob,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    ComfyWorkerDown,
    Device,
    DownloadedFile,
    Graph,
    HistoryEntry,
    HistoryStatus,
    JobResult,
    Log,
    NodeIssue,
    OutputFile,
    PromptAccepted,
    SystemInfo,
    SystemStats,
    content_name,
    parse_version,
)
from .resource import MOTION_MODULES, ComfyModels, ComfyUIResource
from .validation import format_issues, issues_from_400, validate_graph

__all__ = [
    "MOTION_MODULES", "OUTPUT_KEYS", "OWN_PROMPT_ID_SINCE", "URL_ENV", "ComfyBusy", "ComfyCancelStuck", "ComfyError", "ComfyExecutionError",
    "ComfyInterrupted", "ComfyLostJob", "ComfyModels", "ComfyTimeout", "ComfyUIClient", "ComfyUIResource",
    "ComfyUnavailable", "ComfyValidationError", "ComfyWorkerDown", "Device", "DownloadedFile", "Graph", "HistoryEntry", "HistoryStatus",
    "JobResult", "Log", "WaitHook", "NodeIssue", "OutputFile", "PromptAccepted", "SystemInfo", "SystemStats", "content_name",
    "format_issues", "issues_from_400", "parse_version", "validate_graph",
]
