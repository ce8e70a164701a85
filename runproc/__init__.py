"""runproc: a runc-compatible OCI runtime, frozen into one executable."""

# The one place the version lives: the CLI, the release file names and the
# build all read it from here.
__version__ = "0.1.0"

# The OCI runtime-spec version whose config.json and state output we follow.
OCI_VERSION = "1.0.2"
