"""Two example job types, the way a user of jobledger writes them.

Run a worker with them: ``jobledger worker --app dental.jobs`` (the default app).
A job type is one typed function: its params model is its second parameter's
annotation, so the gateway rejects bad params with 422 before anything is queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from pydantic import BaseModel, Field

from consumers import JobContext, JobRegistry, PermanentError

registry = JobRegistry()


class SegmentParams(BaseModel):
    scan_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="The scan to segment.")
    teeth: list[int] = Field(default_factory=list, description="FDI tooth numbers; empty = all.")
    stage_s: float = Field(default=0.2, ge=0, le=60, description="Simulated seconds per stage.")
    fail: bool = Field(default=False, description="Fail on purpose (for demos and tests).")


@registry.job("segment")
async def segment(ctx: JobContext, params: SegmentParams) -> dict[str, object]:
    """Segment a scan in stages, reporting progress after each."""
    stages = ["load scan", "denoise", "segment teeth", "build meshes", "store masks"]
    for done, stage in enumerate(stages, start=1):
        await asyncio.sleep(params.stage_s)
        if params.fail and done == 3:
            raise PermanentError(f"segmentation failed at stage {stage!r}")
        ctx.progress(100 * done / len(stages), stage)
    digest = hashlib.sha256(f"{ctx.case_id}/{params.scan_id}".encode()).hexdigest()[:16]
    return {"mask_id": digest, "teeth": params.teeth or list(range(11, 49))}


class ProcessParams(BaseModel):
    steps: int = Field(default=4, ge=1, le=1000, description="How many processing steps.")
    step_s: float = Field(
        default=0.1, ge=0, le=60, description="Seconds of CPU-bound work per step."
    )


@registry.job("process")
def process(ctx: JobContext, params: ProcessParams) -> dict[str, object]:
    """A blocking handler: runs in a worker thread and checks for cancellation."""
    checksum = 0
    for step in range(1, params.steps + 1):
        ctx.check_cancelled()
        deadline = time.monotonic() + params.step_s
        while time.monotonic() < deadline:
            checksum = (checksum * 31 + step) % 1_000_003
        ctx.progress(100 * step / params.steps, f"step {step}/{params.steps}")
    return {"steps": params.steps, "checksum": checksum}
