"""An in-process Flower ``Grid``: calls the ClientApp directly, no Ray, no SuperLink.

Not one of Flower's runtimes: it exists for fast tests and sweeps. The ServerApp and the
ClientApp code are exactly those that Flower's simulation runtime runs; each client keeps
its own ``Context`` (and so its ``context.state``) across rounds, as on Flower.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedkd import protocol as proto


class LocalGrid(Grid):
    """Run ``client_app`` for ``num_nodes`` simulated nodes in this process."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1) -> None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 1
        self.client_app = client_app
        self._run = None
        # Node ids far from partition ids, so nothing can confuse the two.
        self.contexts = {
            7_000 + 37 * i: Context(
                run_id=run_id,
                node_id=7_000 + 37 * i,
                node_config={proto.NODE_PARTITION_ID: i, proto.NODE_NUM_PARTITIONS: num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run_id: int) -> None:  # noqa: D102 - Grid API
        self._run = run_id

    @property
    def run(self):  # noqa: D102 - Grid API
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: D102
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl
        )

    def get_node_ids(self) -> list[int]:  # noqa: D102 - Grid API
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:  # noqa: D102
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as Flower's InMemoryGrid
            context = self.contexts[msg.metadata.dst_node_id]
            try:
                reply = self.client_app(msg, context)
            except Exception as err:  # noqa: BLE001 - Flower turns a raising ClientApp into an error reply
                reply = Message(Error(code=2, reason=repr(err)), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = context.node_id
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:  # noqa: D102
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:  # noqa: D102
        return self.pull_messages(self.push_messages(messages))
