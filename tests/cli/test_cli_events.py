"""`show` and `tail` as subprocesses: which event types decode (protobuf's
well-known types, `--proto-module`, `[cli] proto_modules`, from the console
script too), what reaches the terminal (control characters escaped, values
whole when piped), a `--from` past the end, and pages angzarr wrote without a
committed event."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message

import angzarr_es
from angzarr_es.pb import player_pb2
from tests.support import jsadmin
from tests.support.angzarr_schema import COORDINATOR, angzarr_book
from tests.support.cli import (
    cli_env,
    console_script,
    one_error_line,
    run_cli,
    run_script,
    start_cli,
    stderr_lines,
    stop,
)

# -- event types from the user's own modules --------------------------------------------

PACKAGE = "angzarr_cli_test_shop"

# What protoc writes, minus the serialized descriptor: the module registers
# its message in the default pool and builds the class, as generated code does.
GENERATED = f'''
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal import builder

_file = descriptor_pb2.FileDescriptorProto(
    name="{PACKAGE}/orders.proto", package="{PACKAGE}", syntax="proto3"
)
_file.message_type.add(name="OrderPlaced").field.add(name="item", number=1, type=9, label=1)
DESCRIPTOR = descriptor_pool.Default().AddSerializedFile(_file.SerializeToString())
builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, "shop.orders_pb2", globals())
'''


def order_placed(item: str) -> Message:
    """An `OrderPlaced` built in a pool of its own: this process never imports
    the module, so only the command line's import can decode it."""
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{PACKAGE}/orders.proto", package=PACKAGE, syntax="proto3"
    )
    file.message_type.add(name="OrderPlaced").field.add(name="item", number=1, type=9, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.OrderPlaced"))
    return json_format.ParseDict({"item": item}, cls())


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A working directory with the package `shop` and its module `orders_pb2`."""
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "orders_pb2.py").write_text(GENERATED)
    return tmp_path


async def append_order(client: angzarr_es.Client) -> str:
    await client.provision()
    order = str(uuid.uuid4())
    await client.store("order").append(order, [order_placed("lamp")], expected=0)
    return order


async def test_proto_module_is_found_in_the_working_directory_by_the_console_script(
    conf: Path, client: angzarr_es.Client, shop: Path
) -> None:
    order = await append_order(client)
    script, env = console_script(shop)
    args = ["show", "order", order, "--json", "--config", str(conf)]
    done = run_script(script, *args, "--proto-module", "shop.orders_pb2", env=env, cwd=shop)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["event"] == {"item": "lamp"}

    # A module that is not there: the error says where it looked.
    done = run_script(script, *args, "--proto-module", "shop.missing_pb2", env=env, cwd=shop)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "--proto-module shop.missing_pb2: cannot import it" in line
    assert f"looked in the working directory {shop} and on sys.path (" in line


@pytest.fixture
def module_confs(conf: Path, shop: Path) -> tuple[Path, Path]:
    """`conf` with `[cli] proto_modules` naming shop.orders_pb2, and naming a missing module."""
    found, missing = shop / "found.toml", shop / "missing.toml"
    found.write_text(conf.read_text() + '\n[cli]\nproto_modules = ["shop.orders_pb2"]\n')
    missing.write_text(conf.read_text() + '\n[cli]\nproto_modules = ["shop.nothing_pb2"]\n')
    return found, missing


async def test_cli_proto_modules_in_the_config_decode_events(
    conf: Path, client: angzarr_es.Client, shop: Path, module_confs: tuple[Path, Path]
) -> None:
    found, missing = module_confs
    order = await append_order(client)
    done = run_cli("show", "order", order, "--json", "--config", str(conf), cwd=shop)
    # Unknown here: the stored type URL and bytes.
    assert json.loads(done.stdout)["event"]["@type"] == f"type.googleapis.com/{PACKAGE}.OrderPlaced"
    done = run_cli("show", "order", order, "--json", "--config", str(found), cwd=shop)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["event"] == {"item": "lamp"}

    done = run_cli("show", "order", order, "--config", str(missing), cwd=shop)
    assert done.returncode == 2
    assert "cli.proto_modules shop.nothing_pb2: cannot import it" in one_error_line(done.stderr)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("./shop/orders_pb2.py", "is a file path; give its module name instead: shop.orders_pb2"),
        ("shop/orders_pb2.py", "is a file path; give its module name instead: shop.orders_pb2"),
        (".orders_pb2", "is a relative module name"),
        ("", "an empty module name"),
        ("shop orders", "is not a dotted module name"),
    ],
)
@pytest.mark.parametrize("command", ["show", "tail"])
def test_a_proto_module_that_is_not_a_module_name_is_one_line(
    conf: Path, shop: Path, name: str, problem: str, command: str
) -> None:
    args = ["player", "x"] if command == "show" else ["player"]
    done = run_cli(command, *args, "--proto-module", name, "--config", str(conf), cwd=shop)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert f"--proto-module {name!r}: {problem}" in line


def test_a_proto_module_that_fails_to_import_is_one_line(conf: Path, shop: Path) -> None:
    (shop / "shop" / "broken_pb2.py").write_text("raise RuntimeError('generated for protobuf 3')\n")
    done = run_cli(
        "show", "player", "x", "--proto-module", "shop.broken_pb2", "--config", str(conf), cwd=shop
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "shop.broken_pb2: importing it failed: RuntimeError: generated for protobuf 3" in line


# -- protobuf's well-known types ------------------------------------------------------


async def test_well_known_types_always_decode(conf: Path, client: angzarr_es.Client) -> None:
    await client.provision()
    stamp = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    await client.store("note").append(
        "n1", [wrappers_pb2.StringValue(value="hello"), stamp], expected=0
    )
    done = run_cli("show", "note", "n1", "--json", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["event"] for r in rows] == ["hello", "2023-11-14T22:13:20Z"]
    assert rows[0]["type"] == "google.protobuf.StringValue"
    done = run_cli("show", "note", "n1", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert re.search(r"google\.protobuf\.StringValue +- +\"hello\"$", done.stdout, re.M)


# -- what reaches the terminal ---------------------------------------------------------

HOSTILE_ID = "\x1b[2J\x1b[31mpwned"
HOSTILE_NAME = "\x1b]0;title\x07\x9b31m\u202eevil"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


async def test_show_escapes_control_characters(conf: Path, client: angzarr_es.Client) -> None:
    await client.provision()
    await client.store("player").append(
        HOSTILE_ID, [player_pb2.PlayerRegistered(name=HOSTILE_NAME)], expected=0
    )
    done = run_cli("show", "player", HOSTILE_ID, "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert not any(c in done.stdout for c in RAW), done.stdout
    assert "player/\\x1b[2J\\x1b[31mpwned: 1 event(s) shown" in done.stdout
    assert "\\u001b]0;title\\u0007\\x9b31m\\u202eevil" in done.stdout

    done = run_cli("show", "player", HOSTILE_ID, "--json", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert not any(c in done.stdout for c in RAW), done.stdout
    row = json.loads(done.stdout)
    assert (row["id"], row["event"]["name"]) == (HOSTILE_ID, HOSTILE_NAME)

    done = run_cli("show", "player", HOSTILE_ID + "x", "--config", str(conf))
    assert done.returncode == 1
    assert not any(c in done.stderr for c in RAW), done.stderr


async def test_tail_escapes_control_characters(conf: Path, client: angzarr_es.Client) -> None:
    await client.provision()
    tail = start_cli("tail", "player", "--count", "1", "--config", str(conf))
    try:
        stderr_lines(tail).until(lambda line: line.startswith("tailing "))
        await client.store("player").append(
            HOSTILE_ID, [player_pb2.PlayerRegistered(name=HOSTILE_NAME)], expected=0
        )
        (line,) = tail.rest()
    finally:
        stop(tail)
    assert not any(c in line for c in RAW), line
    assert "player/\\x1b[2J\\x1b[31mpwned  #0" in line


async def test_piped_output_is_never_cut_to_a_terminal_width(
    conf: Path, client: angzarr_es.Client
) -> None:
    pytest.importorskip("rich")
    await client.provision()
    name = "Alice-" + "x" * 300
    await client.store("player").append("p1", [player_pb2.PlayerRegistered(name=name)], expected=0)
    env = cli_env(COLUMNS="80")
    del env["ANGZARR_ES_PLAIN"]  # rich is installed; stdout is a pipe
    done = run_cli("show", "player", "p1", "--config", str(conf), env=env)
    assert done.returncode == 0, done.stderr
    assert json.dumps({"name": name}, separators=(",", ":")) in done.stdout
    assert "…" not in done.stdout
    # Where a terminal is claimed (FORCE_COLOR), rich draws its table.
    env["FORCE_COLOR"] = "1"
    done = run_cli("show", "player", "p1", "--config", str(conf), env=env)
    assert done.returncode == 0, done.stderr
    assert "┃" in re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)


# -- a range past the end ------------------------------------------------------------


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
async def test_show_from_past_the_end_says_where_the_end_is(
    conf: Path, client: angzarr_es.Client, json_flag: list[str]
) -> None:
    await client.provision()
    store = client.store("player")
    await store.append(
        "p1", [player_pb2.PlayerRegistered(), player_pb2.FundsDeposited()], expected=0
    )
    done = run_cli("show", "player", "p1", "--from", "50", *json_flag, "--config", str(conf))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "--from 50 is past the end of player aggregate 'p1': its events are #0 to #1" in line
    assert done.stdout == ""
    # The last event itself, and an empty range inside the history, are fine.
    done = run_cli("show", "player", "p1", "--from", "1", *json_flag, "--config", str(conf))
    assert done.returncode == 0, done.stderr
    done = run_cli(
        "show", "player", "p1", "--from", "1", "--to", "1", *json_flag, "--config", str(conf)
    )
    assert done.returncode == 0, done.stderr


# -- pages angzarr wrote without a committed event -------------------------------------


async def test_show_names_angzarrs_claim_checks_and_pending_pages(
    conf: Path, client: angzarr_es.Client
) -> None:
    await client.provision()
    root = str(uuid.uuid4())
    ack = await jsadmin.publish(
        client, client.store("player").subject(root), angzarr_book(COORDINATOR)
    )
    assert ack.error is None
    done = run_cli("show", "player", root, "--json", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["type"] for r in rows] == [
        "examples.player.FundsDeposited",
        "angzarr_es.core.PayloadReference",
        "angzarr_es.core.EventPage",
        "examples.player.FundsDeposited",
    ]
    assert rows[1]["event"]["uri"] == "s3://payloads/abc.bin"
    assert rows[2]["event"]["no_commit"] is True
    assert rows[2]["event"]["cascade_id"] == "cascade-9"
    done = run_cli("show", "player", root, "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "angzarr_es.core.EventPage" in done.stdout
