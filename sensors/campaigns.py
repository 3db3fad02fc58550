"""Bulk campaigns: a folder of briefs becomes jobs, exactly once per brief.

    $SPARKLIO_CAMPAIGNS_DIR (default <SPARKLIO_HOME>/campaigns)
        spring.json        one brief
        launch.jsonl       one brief per line
        retail.csv         one brief per row (header: the Brief fields; see CSV_COLUMNS)
        recurring/         briefs the nightly schedule makes again every night

A brief is either the Brief itself (spec 3.1 fields) or {"brief": {...}, "brand": {...} or
"brand_kit": "folder", "quality": "...", "engine_preference": "..."}. CSV rows have the Brief
fields as columns (`channels` separated by ';', '|' or ','), and optionally quality,
engine_preference and a brand: `brand_kit` (a brand folder with its brand.json, logo and
packshots, or the JSON file itself, relative to the campaign file) or a text-only kit (brand_name,
brand_colors, logo_text, cta_default, tone_keywords). A brief with neither gets the brand stored
under its brand_id (POST /brands), if any.

Exactly once: a brief's job id is derived from its file and content, not its row (job ids look like
`spring-acme-cold-brew-3f9c1a7e0b`), so the same brief always names the same job wherever its row
is (inserting, deleting or reordering rows makes only the new or changed briefs); the sensor requests a job
only when its partition does not exist yet, keys the run request by the job id, and keeps a cursor
of each file's content hash so unchanged files are not read again. Editing a row makes a new job
for that row; the other rows stay done.

A bad row is never silent: it is logged (file, row, field, reason) in the sensor's tick log, the
rest of the file goes ahead, and it is reported again only when the file changes.
"""

import csv
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)
from pydantic import ValidationError

from resources.artifacts import ArtifactStore
from sparklio_assets.brand_library import BRAND_FILE
from sparklio_assets.files import slug
from sparklio_assets.jobs import AUTO, CAMPAIGN_TAG, CHAIN_TAG, JOB_TAG, ROW_TAG, create_job, next_stages
from sparklio_assets.models import BrandKit, Brief, JobSpec, describe_validation_error
from sparklio_assets.partitions import JOBS

SUFFIXES = (".json", ".jsonl", ".csv")
SETTLE_SECONDS = 2.0  # a file younger than this may still be being written: read it next tick
BRIEF_FIELDS = tuple(Brief.model_fields)
CSV_COLUMNS = (*BRIEF_FIELDS, "quality", "engine_preference", "brand_kit",
               "brand_name", "brand_colors", "logo_text", "cta_default", "tone_keywords")
LIST_SPLIT = re.compile(r"[;|,\s]+")


def campaigns_dir(store: ArtifactStore) -> Path:
    return Path(os.environ.get("SPARKLIO_CAMPAIGNS_DIR") or store.folder / "campaigns")


def recurring_dir(store: ArtifactStore) -> Path:
    return Path(os.environ.get("SPARKLIO_RECURRING_DIR") or campaigns_dir(store) / "recurring")


@dataclass
class BriefRow:
    """One row of a campaign file: a valid job request, or the reason it is not one."""

    file: str
    row: int  # the line of the file (JSONL, CSV: the header is line 1), 1 for a .json file
    spec: JobSpec | None = None
    error: str | None = None

    def describe(self) -> str:
        return f"campaign {self.file} row {self.row}: {self.error}"


@dataclass
class Collected:
    new: list[BriefRow] = field(default_factory=list)  # jobs to create now
    existing: list[BriefRow] = field(default_factory=list)  # already jobs: skipped, exactly once
    bad: list[BriefRow] = field(default_factory=list)
    cursor: dict[str, str] = field(default_factory=dict)  # file → content hash, read and done
    waiting: list[str] = field(default_factory=list)  # files still being written


# ---------------------------------------------------------------- reading campaign files


def job_id_for(file: str, spec: JobSpec, salt: str = "") -> str:
    """Deterministic: the same brief in the same file is always the same job, wherever its row is
    (inserting, deleting or reordering rows makes no job again). Readable: file, night, product."""
    content = json.dumps(spec.model_dump(mode="json", exclude={"job_id", "created_at"}), sort_keys=True,
                         ensure_ascii=False)
    digest = hashlib.sha256(f"{file}\n{salt}\n{content}".encode()).hexdigest()[:10]
    stem = slug(Path(file).name.split(".")[0], limit=16, fallback="campaign")
    return f"{stem}-{salt + '-' if salt else ''}{slug(spec.brief.product, limit=24, fallback='ad')}-{digest}"


def _brand_kit(value: str, base: Path) -> dict:
    """A brand folder (or its brand.json) named by a campaign row, read with its files."""
    path = (base / value).resolve()
    path = path / BRAND_FILE if path.is_dir() else path
    try:
        return BrandKit.from_file(path).model_dump()
    except FileNotFoundError:
        raise ValueError(f"brand_kit: {path} does not exist (paths are relative to the campaign file)") from None
    except ValidationError as error:
        raise ValueError(describe_validation_error(error, "brand")) from None
    except ValueError as error:
        raise ValueError(f"brand_kit: {path} is not a brand kit JSON ({error})") from None


def _spec_from_entry(entry: object, base: Path) -> JobSpec:
    """A brief, or {"brief", "brand" or "brand_kit", "quality", "engine_preference"}: validated,
    job_id to come."""
    if not isinstance(entry, dict):
        raise ValueError(f"(row): must be a JSON object, got {type(entry).__name__}")
    data = dict(entry) if "brief" in entry else {"brief": entry}
    if isinstance(data.get("brand_kit"), str):
        data["brand"] = _brand_kit(data.pop("brand_kit"), base)
    try:
        return JobSpec.model_validate({k: v for k, v in data.items() if k not in ("job_id", "created_at")})
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None


def _spec_from_csv(row: dict[str, str | None], base: Path) -> JobSpec:
    if None in row or any(v is None for v in row.values()):
        raise ValueError("(row): has more or fewer cells than the header")
    row = {k.strip(): v.strip() for k, v in row.items()}
    unknown = [k for k in row if k not in CSV_COLUMNS]
    if unknown:
        raise ValueError(f"{unknown[0]}: not a campaign column (columns: {', '.join(CSV_COLUMNS)})")
    brief = {k: row[k] for k in BRIEF_FIELDS if row.get(k)}
    if "channels" in brief:
        brief["channels"] = [c for c in LIST_SPLIT.split(brief["channels"]) if c]
    data: dict = {"brief": brief}
    for key in ("quality", "engine_preference"):
        if row.get(key):
            data[key] = row[key]
    if row.get("brand_kit"):
        data["brand"] = _brand_kit(row["brand_kit"], base)
    elif row.get("brand_colors"):
        data["brand"] = {"brand_id": brief.get("brand_id", ""),
                         "name": row.get("brand_name") or brief.get("product", ""),
                         "colors": [c for c in LIST_SPLIT.split(row["brand_colors"]) if c],
                         "logo_text": row.get("logo_text", ""), "cta_default": row.get("cta_default", ""),
                         "tone_keywords": [k for k in LIST_SPLIT.split(row.get("tone_keywords", "")) if k]}
    elif any(row.get(k) for k in ("brand_name", "logo_text", "cta_default", "tone_keywords")):
        raise ValueError("brand.colors: a brand kit needs brand_colors (e.g. '#F2EDE8;#7C4D3A')")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None


def _check_utf8(text: str, where: str) -> None:
    """Text decoded with surrogateescape keeps undecodable bytes as lone surrogates: find one."""
    bad = next((i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff"), None)
    if bad is not None:
        raise ValueError(f"{where}: not UTF-8 text (byte 0x{ord(text[bad]) - 0xDC00:02x} at column {bad + 1})")


def _entries(path: Path, text: str) -> Iterator[tuple[int, Callable[[], JobSpec]]]:
    """(row, parse) per brief in the file; parse raises ValueError naming the field and reason."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        def whole() -> JobSpec:
            _check_utf8(text, "(file)")
            try:
                entry = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"(file): not valid JSON ({error})") from None
            return _spec_from_entry(entry, path.parent)
        yield 1, whole
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue

            def one(line: str = line) -> JobSpec:
                _check_utf8(line, "(row)")
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"(row): not valid JSON ({error.msg} at column {error.colno})") from None
                return _spec_from_entry(entry, path.parent)
            yield number, one
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for record in reader:
            if not any((v or "").strip() for k, v in record.items() if k is not None):
                continue
            def row(record: dict = record) -> JobSpec:
                _check_utf8(",".join(v for v in record.values() if isinstance(v, str)), "(row)")
                return _spec_from_csv(record, path.parent)
            yield reader.line_num, row


def read_campaign_file(path: Path, name: str, salt: str = "") -> list[BriefRow]:
    """Every brief in one campaign file, each a job spec with its deterministic id or an error."""
    try:  # an undecodable line is that row's error, not the whole file's (_check_utf8)
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    except OSError as error:
        return [BriefRow(name, 1, error=f"(file): cannot be read ({error})")]
    rows = []
    for row, parse in _entries(path, text):
        try:
            spec = parse()
        except ValueError as error:
            rows.append(BriefRow(name, row, error=str(error)))
            continue
        spec = spec.model_copy(update={"job_id": job_id_for(name, spec, salt)})
        rows.append(BriefRow(name, row, spec=spec))
    if not rows:
        rows.append(BriefRow(name, 1, error="(file): no briefs in it"))
    return rows


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def campaign_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith((".", "_", "~")))


def collect(folder: Path, job_exists: Callable[[str], bool], cursor: dict[str, str] | None = None,
            salt: str = "", settle_s: float = SETTLE_SECONDS) -> Collected:
    """What a folder asks for that is not done yet. Files whose hash is in `cursor` are not read."""
    out = Collected(cursor=dict(cursor or {}))
    now = time.time()
    seen: set[str] = set()
    for path in campaign_files(folder):
        name = path.name
        try:
            if now - path.stat().st_mtime < settle_s:
                out.waiting.append(name)
                continue
            digest = _digest(path)
        except OSError:
            continue  # removed while we looked
        if out.cursor.get(name) == digest:
            continue
        for row in read_campaign_file(path, name, salt):
            if row.spec is None:
                out.bad.append(row)
            elif row.spec.job_id in seen or job_exists(row.spec.job_id):
                out.existing.append(row)
            else:
                seen.add(row.spec.job_id)
                out.new.append(row)
        out.cursor[name] = digest
    present = {p.name for p in campaign_files(folder)}
    out.cursor = {k: v for k, v in out.cursor.items() if k in present}
    return out


def start_request(row: BriefRow, run_key_prefix: str = "campaign") -> RunRequest:
    """The job's first stage (jobs.next_stages), tagged so the chain sensor carries it on."""
    job_id = row.spec.job_id
    (stage,) = next_stages(job_id, (), done=())
    return RunRequest(job_name=stage.job_name, partition_key=stage.partition_key, run_key=f"{run_key_prefix}:{job_id}",
                      tags={JOB_TAG: job_id, CAMPAIGN_TAG: row.file, ROW_TAG: str(row.row), CHAIN_TAG: AUTO})


def _report(log, collected: Collected) -> None:
    for row in collected.bad:
        log.error(f"bad row skipped: {row.describe()}")
    for row in collected.existing:
        log.info(f"campaign {row.file} row {row.row}: job {row.spec.job_id} exists already, skipped")
    for row in collected.new:
        log.info(f"campaign {row.file} row {row.row}: new job {row.spec.job_id} ({row.spec.brief.product})")
    if collected.waiting:
        log.info(f"still being written, next tick: {', '.join(collected.waiting)}")


# ---------------------------------------------------------------- the sensor and the schedule


def _load_cursor(raw: str | None) -> dict[str, str]:
    try:
        files = json.loads(raw)["files"] if raw else {}
        return {str(k): str(v) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def build_campaign_sensor(storyboard_job, minimum_interval_seconds: int = 30):
    @sensor(name="campaign_sensor", job=storyboard_job, minimum_interval_seconds=minimum_interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description="Briefs dropped in the campaigns folder (*.json, *.jsonl, *.csv) become jobs, "
                        "exactly once each; bad rows are logged and skipped.")
    def campaign_sensor(context: SensorEvaluationContext, store: ArtifactStore):
        folder = campaigns_dir(store)
        if not folder.is_dir():
            return SkipReason(f"campaign folder {folder} does not exist (set SPARKLIO_CAMPAIGNS_DIR)")
        instance = context.instance
        collected = collect(folder, lambda job_id: instance.has_dynamic_partition(JOBS.name, job_id),
                            _load_cursor(context.cursor))
        _report(context.log, collected)
        for row in collected.new:  # the partitions: the SensorResult's request below
            create_job(row.spec, None, store)
        cursor = json.dumps({"files": collected.cursor}, sort_keys=True)
        if not collected.new:
            bad = f"; {len(collected.bad)} bad row(s) logged" if collected.bad else ""
            return SensorResult(skip_reason=SkipReason(f"no new briefs in {folder}{bad}"), cursor=cursor)
        return SensorResult(
            run_requests=[start_request(row) for row in collected.new],
            dynamic_partitions_requests=[JOBS.build_add_request([row.spec.job_id for row in collected.new])],
            cursor=cursor,
        )

    return campaign_sensor


def build_recurring_schedule(storyboard_job, cron_schedule: str | None = None):
    """Nightly (SPARKLIO_RECURRING_CRON, default 02:00): every brief in the recurring folder becomes
    that night's job (the date is part of its id, so each night makes each brief exactly once)."""

    @schedule(name="recurring_campaigns", job=storyboard_job,
              cron_schedule=cron_schedule or os.environ.get("SPARKLIO_RECURRING_CRON", "0 2 * * *"),
              execution_timezone=os.environ.get("SPARKLIO_TIMEZONE", "UTC"),
              default_status=DefaultScheduleStatus.STOPPED,
              description="Re-makes the briefs in <campaigns>/recurring every night, one job per brief per night.")
    def recurring_campaigns(context: ScheduleEvaluationContext, store: ArtifactStore):
        folder = recurring_dir(store)
        when: datetime = context.scheduled_execution_time or datetime.now()
        salt = when.strftime("%Y%m%d")
        instance = context.instance
        collected = collect(folder, lambda job_id: instance.has_dynamic_partition(JOBS.name, job_id),
                            salt=salt, settle_s=0)
        _report(context.log, collected)
        if not collected.new:
            bad = f"; {len(collected.bad)} bad row(s) logged" if collected.bad else ""
            return SkipReason(f"no briefs to make for {salt} in {folder}{bad}")
        # Schedules cannot return dynamic partition requests (sensors can): create_job adds them
        # here, before the run requests that need them.
        for row in collected.new:
            create_job(row.spec, instance, store)
        return [start_request(row, run_key_prefix=f"recurring:{salt}") for row in collected.new]

    return recurring_campaigns
