import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Run the deployment tests last. With openvino installed, the first torch.multiprocessing.spawn after them in the
# same pytest process was seen to end it with a segmentation fault (test_eval_distributed, after test_bad_input and
# test_deploy; each module passes alone; the cause is not found yet): no test that spawns processes follows them.
_LAST_MODULES = ("test_deploy.py",)


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.path.name in _LAST_MODULES)  # stable: the order is kept within each part
