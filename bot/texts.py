"""The longer texts the commands answer with (help, the queue listing)."""

from __future__ import annotations

from bot.broker import JobQueue, Runner
from bot.delivery import short
from bot.options import SEED_MAX, STRENGTH_STEPS, Caps
from bot.replies import done_fraction
from bot.settings import Settings
from bot.validation import format_bytes


def help_text(settings: Settings, caps: Caps) -> str:
    """The answer to `help`: the commands, the options and their limits."""
    p = settings.bot.command_prefix
    base = settings.engine.transfer
    size = min(base.size, caps.max_size)
    iterations = min(base.iterations, caps.max_iterations)
    return (
        "**stylebot repaints a photo in the style of a painting.**\n"
        f"• `{p}stylize` with two images attached: first the photo, then the painting whose style "
        f"you want. Attach up to {settings.bot.max_styles} style images to blend them.\n"
        f"• Or reply to a message that has a photo with `{p}stylize` and the style image attached.\n"
        "• Or use `/stylize content:<photo> style:<painting>`.\n"
        "**Options** (text form: "
        f"`{p}stylize strong size:384 color:luminance seed:7`)\n"
        f"• strength — how much style: {', '.join(STRENGTH_STEPS)} (default normal), or a number "
        "(2 = twice normal).\n"
        f"• size — longest side of the result in pixels (default {size}, at most {caps.max_size}). "
        "Bigger is slower.\n"
        f"• iterations — how long to work on it (default {iterations}, at most "
        f"{caps.max_iterations}). More is slower and more refined.\n"
        "• color — none (the painting's colours), luminance (keep your photo's colours) or "
        "histogram (recolour the painting to your photo's colours first).\n"
        f"• seed — a number from 0 to {SEED_MAX} to repeat a result exactly.\n"
        "**Also**\n"
        f"• `{p}queue` — what is waiting and running.\n"
        f"• `{p}cancel [job id]` — stop your job (people with Manage Messages can stop any job), "
        "or press Cancel on the status message.\n"
        "• Buttons on a result: Again (new seed), More style, Less style, Upscale ×2 (twice the "
        "size, refined from the result). Anyone can press them; the new job is theirs.\n"
        "• An animated GIF, WebP or APNG as the photo gives an animation (at most "
        f"{settings.engine.limits.max_frames} frames and {settings.engine.limits.max_frame_side} px; "
        "`sample:yes` shrinks a longer one).\n"
        f"Images: PNG, JPEG, WebP, GIF or BMP, up to "
        f"{format_bytes(settings.engine.limits.max_bytes, round_up=False)} and "
        f"{settings.engine.limits.max_pixels / 1e6:g} megapixels each."
    )

def queue_text(queue: JobQueue, runner: Runner, prefix: str) -> str:
    """The answer to `queue`: what runs and what waits, in the order it will run."""
    lines: list[str] = []
    unavailable = runner.unavailable
    if unavailable is not None:
        lines.append("⚠️ The painter is out of service (a setup problem on the host's side).")
    elif runner.ready_count == 0:
        lines.append("⏳ The painter is warming up.")
    running, waiting = queue.running, queue.waiting
    if not running and not waiting:
        lines.append(
            f"Nothing is waiting or running. `{prefix}stylize help` shows how to start."
        )
        return "\n".join(lines)
    if running:
        lines.append("**Running**")
        for job in running:
            p = job.progress
            pct = f"{int(done_fraction(p) * 100)}%" if p else "starting"
            lines.append(f"▶ `{job.id}` <@{job.user_id}> — {pct} — {short(job.label)}")
    if waiting:
        lines.append(f"**Waiting** ({len(waiting)} of at most {queue.max_waiting})")
        for job in waiting[:20]:
            lines.append(f"{job.position}. `{job.id}` <@{job.user_id}> — {short(job.label)}")
        if len(waiting) > 20:
            lines.append(f"… and {len(waiting) - 20} more")
    return "\n".join(lines)[:1990]
