"""The longer texts the commands answer with (help, the queue listing)."""

from __future__ import annotations

from bot.broker import JobQueue, Runner
from bot.delivery import short
from bot.options import SEED_MAX, STRENGTH_STEPS, Caps
from bot.plain import plain
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
        f"• `{p}cancel [job id]` — stop your job (people with Manage Messages can stop any job "
        "of their server), or press Cancel on the status message.\n"
        "• Buttons on a result: Again (new seed), More style, Less style, Upscale ×2 (twice the "
        "size, refined from the result). Anyone can press them; the new job is theirs.\n"
        "• An animated GIF, WebP or APNG as the photo gives an animation (at most "
        f"{settings.engine.limits.max_frames} frames and {settings.engine.limits.max_frame_side} px; "
        "`sample:yes` shrinks a longer one).\n"
        f"Images: PNG, JPEG, WebP, GIF or BMP, up to "
        f"{format_bytes(settings.engine.limits.max_bytes, round_up=False)} and "
        f"{settings.engine.limits.max_pixels / 1e6:g} megapixels each."
    )

def no_such_job_text(job_id: str) -> str:
    return f"There is no job {plain(job_id, 16)} waiting or running."


def not_yours_text(job_id: str) -> str:
    return (
        f"Only the person who asked for job `{job_id}`, or someone with the Manage Messages "
        "permission in this server, can cancel it."
    )


def elsewhere_text(running: int, waiting: int) -> str:
    """Jobs of other servers (and other members' DMs): counts only, never who or what."""
    parts = []
    if running:
        parts.append(f"{running} running")
    if waiting:
        parts.append(f"{waiting} waiting")
    return f"Elsewhere (other servers and DMs): {' and '.join(parts)}."


def queue_text(
    queue: JobQueue, runner: Runner, prefix: str, *, user_id: int = 0, guild_id: int = 0
) -> str:
    """The answer to `queue`, asked by `user_id` in `guild_id` (0: a DM): what runs and
    what waits, in the order it will run. Jobs of this server and the member's own are
    listed; the rest only counted (server boundaries, issue 11)."""
    lines: list[str] = []
    unavailable = runner.unavailable
    if unavailable is not None:
        lines.append(f"⚠️ {runner.waiting_note or 'The painter is out of service.'}")
    elif runner.ready_count == 0:
        lines.append(f"⏳ {runner.waiting_note or 'The painter is warming up.'}")
    running, waiting = queue.running, queue.waiting
    if not running and not waiting:
        lines.append(
            f"Nothing is waiting or running. `{prefix}stylize help` shows how to start."
        )
        return "\n".join(lines)
    shown_running = [j for j in running if j.visible_to(user_id, guild_id)]
    shown_waiting = [j for j in waiting if j.visible_to(user_id, guild_id)]
    if shown_running:
        lines.append("**Running**")
        for job in shown_running:
            p = job.progress
            pct = f"{int(done_fraction(p) * 100)}%" if p else "starting"
            lines.append(f"▶ `{job.id}` <@{job.user_id}> — {pct} — {short(job.label)}")
    if shown_waiting:
        lines.append(f"**Waiting** ({len(waiting)} of at most {queue.max_waiting} in all)")
        for job in shown_waiting[:20]:
            lines.append(f"{job.position}. `{job.id}` <@{job.user_id}> — {short(job.label)}")
        if len(shown_waiting) > 20:
            lines.append(f"… and {len(shown_waiting) - 20} more")
    others_running = len(running) - len(shown_running)
    others_waiting = len(waiting) - len(shown_waiting)
    if others_running or others_waiting:
        lines.append(elsewhere_text(others_running, others_waiting))
    return "\n".join(lines)[:1990]
