"""`python -m edge_agent run|render`: the room device's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal
import sys
import time

from edge_agent import agent as agent_mod
from edge_agent import bootdrop
from edge_agent import bundle as bundle_mod
from edge_agent import keystore
from edge_agent import logsetup
from edge_agent import memory
from edge_agent import settings as settings_mod
from edge_agent import status
from edge_agent import survey
from edge_agent import tomlsettings
from edge_agent.display import frame
from edge_agent.display import sinks


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent", description="roomproof room device"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the room device"),
        ("render", "render one frame and exit"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--config", type=pathlib.Path, required=True, help="enrollment bundle (TOML)"
        )
        sub.add_argument(
            "--state-dir", type=pathlib.Path, required=True, help="keys, outbox, state"
        )
        sub.add_argument("--settings", type=pathlib.Path, help="agent settings (TOML)")
        if name == "render":
            sub.add_argument("--out", type=pathlib.Path, required=True, help="PNG file to write")
    drop = commands.add_parser(
        "import-bundle", help="take a bundle dropped on the boot partition into the state dir"
    )
    drop.add_argument("--from", dest="source", type=pathlib.Path, required=True)
    drop.add_argument("--state-dir", type=pathlib.Path, required=True)
    drop.add_argument("--owner", help="user that owns the state dir (the service's user)")
    status_cmd = commands.add_parser("status", help="is the agent here healthy? (one screen)")
    status_cmd.add_argument("--state-dir", type=pathlib.Path, required=True)
    status_cmd.add_argument("--metrics-file", type=pathlib.Path)
    survey_cmd = commands.add_parser("sensors", help="show what each sensor sees (site survey)")
    survey_cmd.add_argument("--settings", type=pathlib.Path, help="agent settings (TOML)")
    survey_cmd.add_argument("--duration", type=float, help="stop after this many seconds")
    survey_cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


async def _run(args: argparse.Namespace, settings: settings_mod.AgentSettings) -> None:
    memory.tune_malloc()
    agent = agent_mod.Agent(args.config, args.state_dir, settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stopping.set)
    logging.getLogger("edge_agent").info(
        "room device %s/%s in room %s, slot %d s",
        agent.bundle.site,
        agent.bundle.device,
        agent.bundle.room,
        settings.slot_s,
    )
    await agent.run()


async def _render(args: argparse.Namespace, settings: settings_mod.AgentSettings) -> None:
    b = bundle_mod.load(args.config)
    room = agent_mod.Room(b, keystore.load(args.state_dir), settings)
    content = room.content(int(time.time() * 1000), "render only")
    image = frame.render(content, settings.frame_width, settings.frame_height)
    await sinks.PngSink(args.out).show(image, content)
    print(f"wrote {args.out} (slot {content.slot}, {content.url})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "status":
        result = status.report(args.state_dir, args.metrics_file)
        print(status.render(result))
        return 0 if not result.problems else 1
    if args.command == "import-bundle":
        try:
            taken = bootdrop.take(args.source, args.state_dir, args.owner)
        except (bootdrop.DropError, OSError) as exc:
            print(f"edge_agent: cannot import the bundle: {exc}", file=sys.stderr)
            return 1
        if taken is None:
            print(f"no bundle at {args.source}; nothing to import")
        else:
            print(f"bundle taken into {taken}; {args.source} erased")
        return 0
    try:
        settings = settings_mod.load(args.settings)
        logsetup.configure(settings.log_level, settings.log_format)
        if args.command == "sensors":
            return asyncio.run(survey.run(settings, args.duration, args.json))
        runner = _run if args.command == "run" else _render
        asyncio.run(runner(args, settings))
    except tomlsettings.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `... | head`: the reader has all it wanted
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
