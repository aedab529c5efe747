"""Generated protobuf modules (see proto/ and scripts/gen_proto.py).

- `core_pb2`: angzarr's event model (EventBook, EventPage, Cover, ...).
- `player_pb2`, `hand_pb2`: the example domains used in docs and tests.
"""
