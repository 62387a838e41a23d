"""Session-wide settings: quiet MindSpore logs and one shared on-disk graph compile cache."""
import os
import tempfile

os.environ.setdefault("GLOG_v", "3")
os.environ.setdefault("ASCEND_V4_COMPILE_CACHE", tempfile.mkdtemp(prefix="ascend_v4_ms_cache_"))
