"""The kernel-facing code of the container init: namespaces, root filesystem,
devices, capabilities, seccomp. Everything here runs as root (or in a user
namespace) and is imported only by create/exec, never on the start-up path of
commands such as state or kill. `syscalls` is the one place that calls libc.
"""
