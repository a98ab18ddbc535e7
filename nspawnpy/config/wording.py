"""systemd-nspawn 252's sentences for a command-line value it cannot parse, per option, so
that a bad value reads as it does there ({} is the value as given). Options not listed here
(or errors whose own sentence a parser raises as WordedValueError) get the generic line.

Runs in: the host side, while the command line is parsed.
"""

PARSE_ERRORS = {
    "bind": "Failed to parse --bind(-ro)= argument {}: Invalid argument",
    "bind-ro": "Failed to parse --bind(-ro)= argument {}: Invalid argument",
    "bind-user": "Invalid user name to bind: {}",
    "chdir": "Working directory {} is not an absolute path.",
    "console": "Unknown console mode: {}",
    "inaccessible": "Failed to parse --inaccessible= argument {}: Invalid argument",
    "kill-signal": "Cannot parse signal: {}",
    "link-journal": "Failed to parse link journal mode {}",
    "load-credential": "Missing value for --load-credential=: {}",
    "network-interface": "Network interface name not valid: {}",
    "network-macvlan": "MACVLAN network interface name not valid: {}",
    "network-ipvlan": "IPVLAN network interface name not valid: {}",
    "network-veth-extra": "Failed to parse --network-veth-extra= parameter: {}",
    "network-bridge": "Bridge interface name not valid: {}",
    "network-zone": "Network zone name not valid: vz-{}",
    "no-new-privileges": "Failed to parse --no-new-privileges= argument: {}",
    "oom-score-adjust": "Failed to parse --oom-score-adjust= parameter: {}",
    "personality": "Unknown or unsupported personality '{}'.",
    "pivot-root": "Failed to parse --pivot-root= argument {}: Invalid argument",
    "private-users": 'Failed to parse UID "{}": Invalid argument',
    "private-users-ownership": "Cannot parse --user-namespace-ownership= value: {}",
    "register": "Failed to parse --register= argument: {}",
    "resolv-conf": "Failed to parse /etc/resolv.conf mode: {}",
    "set-credential": "Missing value for --set-credential=: {}",
    "settings": "Failed to parse --settings= argument: {}",
    "suppress-sync": "Failed to parse boolean argument to --suppress-sync=: {}.",
    "timezone": "Failed to parse /etc/localtime mode: {}",
    "tmpfs": "Failed to parse --tmpfs= argument {}: Invalid argument",
    "uuid": "Invalid UUID: {}",
    "volatile": "Failed to parse --volatile= argument: {}",
}
