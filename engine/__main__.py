"""`python -m engine CONTENT STYLE [STYLE ...] -o OUT` — a thin shell around Engine.stylize."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from engine.config import ConfigError, load_engine_config
from engine.errors import InputError, WeightsError
from engine.jobs import (
    COLOR_MODES,
    DEVICES,
    HISTOGRAM_METHODS,
    INIT_MODES,
    NETWORK_LABELS,
    NETWORKS,
    OPTIMIZERS,
    OUTPUT_FORMATS,
    POOLING_MODES,
    PRECISIONS,
    PRESETS,
    TransferSettings,
    apply_preset,
    style_blend_weights,
)

EXIT_BAD_INPUT = 2
EXIT_WEIGHTS = 3
EXIT_INTERNAL = 1
FORMAT_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def parse_layers(text: str) -> tuple[tuple[str, float], ...]:
    """'conv4_2' or 'conv1_1:1,conv2_1:0.5' -> (('conv1_1', 1.0), ('conv2_1', 0.5))."""
    layers = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        try:
            layers.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad layer weight in {part!r}; write NAME or NAME:WEIGHT") from None
    return tuple(layers)


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine",
        description="Repaint a photo in the style of one or more paintings "
                    "(Gatys, Ecker & Bethge, CVPR 2016). Options left out come from the config file.",
    )
    p.add_argument("content", type=Path, help="the photo, or an animated GIF / WebP / APNG "
                                              "(then -o out.gif or out.webp)")
    p.add_argument("styles", type=Path, nargs="+", help="one or more style images (blended)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file (.png, .jpg or .webp)")
    p.add_argument("--config", type=Path, help="your TOML settings file (over config/default.toml)")
    p.add_argument("--preset", choices=PRESETS, help="'photo' for photo-to-photo transfer")
    p.add_argument("--size", type=int, help="longest side of the output, px")
    p.add_argument("--iterations", type=int, help="optimiser iterations (network passes), all scales")
    p.add_argument("--scales", type=int, help="coarse-to-fine pyramid levels (1 = single scale)")
    p.add_argument("--scale-iterations", type=parse_floats,
                   help="split of the iterations over the scales, coarsest first, e.g. 4,2,1")
    p.add_argument("--style-strength", type=float, help="beta/alpha: how much the style counts")
    p.add_argument("--content-layers", type=parse_layers, help="e.g. conv4_2 or conv2_2:0.5,conv4_2:1")
    p.add_argument("--style-layers", type=parse_layers, help="e.g. conv1_1:1,conv2_1:1,conv3_1:1")
    p.add_argument("--tv-weight", type=float, help="total-variation smoothing weight (0 = off)")
    p.add_argument("--init", choices=INIT_MODES, help="start from the photo, noise, or a blend")
    p.add_argument("--noise-ratio", type=float, help="noise fraction for --init blend (0..1)")
    p.add_argument("--seed", type=int, help="random seed: same inputs + seed = same output on CPU")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--learning-rate", type=float, help="Adam step size on 0..255 pixels")
    p.add_argument("--color", choices=COLOR_MODES, help="colour preservation mode")
    p.add_argument("--histogram-method", choices=HISTOGRAM_METHODS)
    p.add_argument("--style-blend", type=parse_floats, help="weights for several styles, e.g. 0.7,0.3")
    p.add_argument("--style-scale", type=float, help="style image size relative to the output")
    p.add_argument("--network", choices=NETWORKS, help="vgg19 (the paper's) or vgg16; each has its own weights")
    p.add_argument("--pooling", choices=POOLING_MODES)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--device", choices=DEVICES, help="auto (a GPU if one is found), gpu or cpu")
    p.add_argument("--max-memory", type=int, help="MiB a job may use; larger jobs run in tiles (0 = auto)")
    p.add_argument("--tile-above", type=int, help="longest side above which the output is tiled (0 = only "
                                                  "when --max-memory requires)")
    p.add_argument("--tile-size", type=int, help="largest tile side, px")
    p.add_argument("--sample", action="store_true",
                   help="an animation over the [limits] caps: keep fewer frames / pixels instead of failing")
    p.add_argument("--init-image", type=Path, help="start from this image (e.g. a smaller result: upscale)")
    p.add_argument("--weights", help="'auto', 'random' (offline testing, not art) or a .h5/.mat path "
                                     "holding the --network's weights")
    p.add_argument("--models-dir", type=Path, help="where weights are stored and downloaded")
    p.add_argument("--format", choices=OUTPUT_FORMATS, help="output format (default: from -o's extension)")
    p.add_argument("--quality", type=int, help="JPEG/WebP quality 1-95")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


OPTION_TO_SETTING = {
    "size": "size", "iterations": "iterations", "scales": "scales",
    "scale_iterations": "scale_iterations", "style_strength": "style_strength",
    "content_layers": "content_layers", "style_layers": "style_layers", "tv_weight": "tv_weight",
    "init": "init", "noise_ratio": "noise_ratio", "seed": "seed", "optimizer": "optimizer",
    "learning_rate": "learning_rate", "color": "color", "histogram_method": "histogram_method",
    "style_blend": "style_blend", "style_scale": "style_scale", "network": "network", "pooling": "pooling",
    "precision": "precision", "device": "device", "max_memory": "max_memory",
    "tile_above": "tile_above", "tile_size": "tile_size",
}


def settings_from_args(args: argparse.Namespace, base: TransferSettings) -> TransferSettings:
    settings = apply_preset(base, args.preset) if args.preset else base
    changes = {field: getattr(args, opt) for opt, field in OPTION_TO_SETTING.items()
               if getattr(args, opt) is not None}
    return replace(settings, **changes)  # validates, listing every problem at once


def output_format(args: argparse.Namespace, default: str) -> str:
    if args.format:
        return args.format
    suffix = args.output.suffix.lower()
    if suffix in FORMAT_BY_SUFFIX:
        return FORMAT_BY_SUFFIX[suffix]
    if suffix:
        raise ValueError(f"{args.output}: unknown output extension {suffix!r}; use .png, .jpg or .webp")
    return default


def check_output_path(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name such as {path / 'out.png'}")
    if not folder.is_dir():
        raise ValueError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{path}: the folder {folder} is not writable")


def fail(code: int, message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our messages
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Validate everything cheap before loading TensorFlow and the weights.
    try:
        config = load_engine_config(args.config)
        settings = settings_from_args(args, config.transfer)
        quality = args.quality if args.quality is not None else config.output.quality
        check_output_path(args.output)
        from engine import animation, images

        content = images.read_image_file(args.content, limits=config.limits)
        clip = None
        if animation.is_animated(args.content.read_bytes()):
            clip = animation.read_animation(args.content.read_bytes(), name=f"'{args.content}'",
                                            limits=config.limits, size=settings.size,
                                            iterations=settings.iterations, sample=args.sample)
            fmt = args.output.suffix.lower().lstrip(".")
            if fmt not in ("gif", "webp"):
                raise ValueError(f"{args.content} is animated ({len(clip.frames)} frames): write it "
                                 f"to a .gif or .webp file, not {args.output.name}")
            for note in clip.notes:
                print(f"note: {note}", file=sys.stderr)
        else:
            fmt = output_format(args, config.output.format)
        styles = [images.read_image_file(path, limits=config.limits) for path in args.styles]
        init = (images.read_image_file(args.init_image, limits=config.limits).rgb
                if args.init_image else None)
        style_blend_weights(settings, len(styles))
    except (ConfigError, ValueError, InputError) as e:
        return fail(EXIT_BAD_INPUT, str(e))

    try:
        weights = load_cli_weights(args, config, settings.network)
    except WeightsError as e:
        return fail(EXIT_WEIGHTS, str(e))

    from engine import device

    device.configure(settings.device)  # before the network is built: Keras puts it there
    from engine.transfer import Engine

    if clip is not None:
        return run_animation(args, weights, clip, [s.rgb for s in styles], settings, fmt, quality)
    bar = None if args.quiet else iteration_bar(settings.iterations)
    try:
        result = Engine(weights).stylize(content.rgb, [s.rgb for s in styles], settings,
                                         on_progress=bar, init=init)
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    finally:
        if bar is not None:
            bar.close()
    data = images.encode_image(result.image, format=fmt, quality=quality, alpha=content.alpha)
    tmp = args.output.with_name(args.output.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, args.output)
    height, width = result.image.shape[:2]
    print(f"wrote {args.output} ({width}x{height}, {result.iterations} iterations, seed {result.seed}, "
          f"{result.elapsed:.1f} s)", file=sys.stderr)
    return 0


def run_animation(args: argparse.Namespace, weights, clip, styles, settings, fmt: str, quality: int) -> int:
    """Every frame of an animated input, written as an animated GIF or WebP with its timing."""
    import time

    from engine import animation
    from engine.transfer import Engine

    started = time.perf_counter()
    bar = None if args.quiet else iteration_bar(settings.iterations)
    try:
        frames = animation.stylize_animation(Engine(weights), clip, styles, settings, on_progress=bar)
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    finally:
        if bar is not None:
            bar.close()
    data, fmt = animation.encode_animation(frames, clip.durations, clip.loop, quality=quality, fmt=fmt)
    tmp = args.output.with_name(args.output.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, args.output)
    height, width = frames[0].shape[:2]
    print(f"wrote {args.output} ({len(frames)} frames of {width}x{height}, "
          f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def load_cli_weights(args: argparse.Namespace, config, network: str):
    """The weights of `network` from --weights / --models-dir or the config; loudly
    announced when random."""
    from engine.weights import load_weights

    weights = load_weights(args.weights or config.weights.source,
                           models_dir=args.models_dir or config.weights.models_path(),
                           network=network, random_seed=config.weights.random_seed,
                           on_progress=None if args.quiet else download_bar(network))
    if weights.is_random:
        print(f"WARNING: using RANDOM {NETWORK_LABELS[network]} weights (--weights random). "
              "This tests the pipeline offline; the output is a texture, NOT art.", file=sys.stderr)
    return weights


class iteration_bar:
    """A tqdm bar fed by Progress events."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="it", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, progress) -> None:
        self.bar.total = progress.total
        self.bar.n = progress.iteration
        self.bar.set_postfix(loss=f"{progress.losses.get('total', 0):.4g}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def download_bar(network: str = "vgg19"):
    state = {}

    def on_progress(done: int, total: int | None) -> None:
        from tqdm import tqdm

        if "bar" not in state:
            state["bar"] = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr,
                                desc=f"downloading {NETWORK_LABELS[network]} weights")
        state["bar"].n = done
        state["bar"].refresh()
        if total is not None and done >= total:
            state["bar"].close()

    return on_progress


if __name__ == "__main__":
    sys.exit(main())
