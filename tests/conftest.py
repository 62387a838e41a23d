"""Session-wide settings: quiet MindSpore's C++ logs."""
import os

os.environ.setdefault("GLOG_v", "3")
