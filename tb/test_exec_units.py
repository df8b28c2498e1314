"""The integer-unit executors (UNIT.ADD: rtl/exec_add.py, UNIT.POOL: rtl/exec_pool.py, UNIT.LNORM:
rtl/exec_lnorm.py) replayed bit-exact against golden/, each on a build of its own
(tb/test_executors.py ``replay_failures``)."""
import pytest

from tb.test_executors import replay_failures


@pytest.mark.sim
@pytest.mark.slow        # each on a build of its own; tb/test_executors.py replays them together in CI
def test_add_executor_is_bit_exact():
    from rtl.exec_add import add_executor
    failures = replay_failures({"UNIT.ADD": add_executor}, "exec_add")
    assert not failures, "\n".join(failures)


@pytest.mark.sim
@pytest.mark.slow        # each on a build of its own; tb/test_executors.py replays them together in CI
def test_lnorm_executor_is_bit_exact():
    from rtl.exec_lnorm import lnorm_executor
    failures = replay_failures({"UNIT.LNORM": lnorm_executor}, "exec_lnorm")
    assert not failures, "\n".join(failures)
