"""Under Poisson client sampling the published ledger must not say who replied in a round.
The server charges every client every round for that reason; but a reply showing more
DP-SGD steps than were charged (a device that trained in a session the server did not see)
is charged with an extra entry naming that client and round. The reply is accepted, so its
predictions are in that round's Gaussian release, and the ledger says the client was in the
sample: the amplification the client-level ε assumes for it in that round is gone."""

from __future__ import annotations

from collections import Counter

from fedkd import protocol as proto
from fedkd.config import from_dict
from fedkd.mechanisms import CentralMechanism
from fedkd.privacy.client import steps_per_round

SIZE = 100


def test_an_accepted_reply_with_extra_dpsgd_steps_does_not_single_out_its_sender():
    cfg = from_dict(
        {
            "clients": {"num_clients": 4, "batch_size": 64, "sampling": "poisson",
                        "sample_rate": 0.5},
            "privacy": {"mechanisms": ["dpsgd", "gaussian"], "delta": 1e-3,
                        "client_delta": 1e-3, "dpsgd": {"noise_multiplier": 1.0}},
        }
    )  # fmt: skip
    mech = CentralMechanism(cfg, num_examples=4 * SIZE, num_proxy=20)
    mech.sizes = {cid: SIZE for cid in range(4)}
    mech.on_send(1, [2])  # client 2 was sampled; every client is charged
    plan, steps = mech.mechanisms[0]._plan(2), steps_per_round(cfg, SIZE)
    # Client 2 reports one more round of steps than the ledger charged.
    reply = {
        proto.DPSGD_STEPS_TOTAL: 2.0 * steps, proto.DPSGD_NOISE: plan.noise_multiplier,
        proto.DPSGD_SAMPLE_RATE: plan.sample_rate, proto.DPSGD_EPSILON: 1.0,
    }  # fmt: skip
    mech.on_reply(1, 2, reply)  # accepted: its predictions go into the release
    per_client = Counter(r.subject for r in mech.ledger.releases if r.scope == "example")
    assert len(set(per_client.values())) == 1, per_client  # nobody stands out
