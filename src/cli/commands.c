#include "cli/commands.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/alert_handlers.h"
#include "cli/handlers.h"
#include "cli/net_handlers.h"
#include "cli/output.h"
#include "kh_config.h"
#include "util/fs.h"
#include "util/mem.h"

#define HELP_WIDTH 79

/* ---- the table ---- */

/* Options shared by the actions that run as tasks. */
#define OPT_NO_WAIT                                                                        \
    { "no-wait", NULL, 0,                                                                  \
      "Do not wait for the task: print its id at once (the whole task with --json) and "   \
      "exit 0. Follow it with 'kvmhost task show ID'." }

#define ACTION_TAIL                                                                        \
    "The request is checked at once: an action the VM's state forbids fails with exit "    \
    "status 5 and changes nothing. Otherwise it runs as a task; kvmhost waits for it, "    \
    "drawing a progress bar on stderr when stderr is a terminal, and exits with the "      \
    "task's outcome. Interrupting the wait (Ctrl-C) leaves the task running and exits 130."

static const cli_opt opts_vm_create[] = {
    { "vcpus", "N", CLI_OPT_ARG,
      "Number of virtual CPUs, 1 to 255 (default 1; with --from-template, the template's)." },
    { "max-vcpus", "N", CLI_OPT_ARG,
      "Most vCPUs the VM may have while it runs (vCPU hot-plug, q35 only; default: --vcpus)." },
    { "hugepages", "on|off", CLI_OPT_ARG,
      "Back guest RAM with 2 MiB huge pages (taken at start; --memory even)." },
    { "memory", "MIB", CLI_OPT_ARG,
      "Guest memory in MiB, 16 to 16777216 (default 512; with --from-template, the "
      "template's). A suffix M or G (512M, 2G) is accepted." },
    { "from-template", "TPL", CLI_OPT_ARG,
      "Clone template TPL: its spec, and for each of its volumes a linked clone (a qcow2 "
      "overlay, made in O(1)). Only --vcpus, --memory and --description may be given too." },
    { "full", NULL, 0, "With --from-template: full copies of the volumes instead (a task)." },
    { "machine", "TYPE", CLI_OPT_ARG,
      "Machine type: q35 (the default, a PC with PCIe) or microvm (minimal, virtio-mmio, "
      "needs --kernel)." },
    { "kernel", "PATH", CLI_OPT_ARG,
      "Boot this kernel image directly. Without it the VM boots from its first disk." },
    { "initrd", "PATH", CLI_OPT_ARG, "Initial ramdisk loaded with --kernel." },
    { "cmdline", "STR", CLI_OPT_ARG,
      "Kernel command line for --kernel, e.g. \"console=ttyS0 root=/dev/vda\"." },
    { "disk", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Attach a disk image; disks keep the order given. SPEC is "
      "PATH,format=raw|qcow2[,readonly]; see DISKS above." },
    { "nic", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Add a virtio NIC on a network: NETWORK[,mac=MAC][,ip=IP] (ip: a static DHCP "
      "reservation; mac: generated when absent). At most 8." },
    { "serial", "on|off", CLI_OPT_ARG, "Serial console (default on)." },
    { "graphics", "TYPE", CLI_OPT_ARG, "none (the default) or vnc." },
    { "description", "TEXT", CLI_OPT_ARG, "Free text for people, one line." },
    { NULL, NULL, 0, NULL },
};

#define DISKS_HELP                                                                          \
    "DISKS: a --disk SPEC is a comma-separated list of items: the image path, "             \
    "format=raw or format=qcow2 (required: formats are never guessed), and readonly "       \
    "(or readonly=on|off). The path comes first, taken literally, '=' included; it can "    \
    "also be given anywhere as path=PATH. A comma inside the path is written as two "       \
    "commas (\",,\", as in QEMU). A path that itself begins with \"path=\", \"format=\" or " \
    "\"readonly\" needs the path= form or a leading \"./\". Relative paths are made "       \
    "absolute against the current directory before they are sent; \".\" and \"..\" are "   \
    "resolved by name, without following symlinks. kvmhostd opens the files, so they must " \
    "exist on its host. A volume of a storage pool is given as volume=POOL/NAME instead of " \
    "a path and format (see 'kvmhost volume')."

static const cli_opt opts_alert_rules_set[] = {
    { "file", "PATH", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "A JSON file: {\"rules\": [...]} with an optional \"webhook\" (the shape 'kvmhost "
      "--json alert rules' prints), or an array of rules alone." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_alert_webhook_set[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "Give up a POST after this long, 1 to 60 (default 5)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_edit[] = {
    { "vcpus", "N", CLI_OPT_ARG,
      "New number of virtual CPUs. On a running q35 VM (given alone) the vCPUs are "
      "hot-plugged or unplugged at once, up to --max-vcpus; unplugging needs the guest's "
      "consent and fails with exit status 8 if it does not release them within 20 s." },
    { "max-vcpus", "N", CLI_OPT_ARG,
      "Most vCPUs the VM may have while it runs (q35; takes effect at the next start)." },
    { "hugepages", "on|off", CLI_OPT_ARG,
      "Back guest RAM with 2 MiB huge pages (from the next start)." },
    { "memory", "MIB", CLI_OPT_ARG, "New guest memory in MiB (suffix M or G accepted)." },
    { "machine", "TYPE", CLI_OPT_ARG, "q35 or microvm." },
    { "kernel", "PATH", CLI_OPT_ARG, "Boot this kernel directly (keeps initrd and cmdline)." },
    { "initrd", "PATH", CLI_OPT_ARG, "Initial ramdisk for the kernel." },
    { "cmdline", "STR", CLI_OPT_ARG, "Kernel command line." },
    { "no-kernel", NULL, 0, "Boot from the first disk again (drops kernel, initrd, cmdline)." },
    { "disk", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Replace the whole disk list with these disks, in order (same SPEC as vm create)." },
    { "no-disks", NULL, 0, "Remove every disk." },
    { "nic", "SPEC", CLI_OPT_ARG | CLI_OPT_REPEAT,
      "Replace the whole NIC list with these NICs (same SPEC as vm create)." },
    { "no-nics", NULL, 0, "Remove every NIC." },
    { "serial", "on|off", CLI_OPT_ARG, "Serial console on or off." },
    { "graphics", "TYPE", CLI_OPT_ARG, "none or vnc." },
    { "description", "TEXT", CLI_OPT_ARG,
      "New description (the only field a running VM accepts)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_top[] = {
    { "once", NULL, 0, "Print one frame and exit (also when stdout is not a terminal)." },
    { "interval", "SECONDS", CLI_OPT_ARG, "Refresh period (default 2)." },
    { "sort", "KEY", CLI_OPT_ARG, "cpu (default), mem or name." },
    { "all", NULL, 0, "Also list VMs that are not running." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_limit[] = {
    { "cpu-weight", "N", CLI_OPT_ARG, "Relative CPU share, 1 to 10000 (100 is the default)." },
    { "cpu-max", "PERCENT", CLI_OPT_ARG,
      "Hard CPU cap in percent of one host CPU (at most 100 per vCPU)." },
    { "memory-max", "MIB", CLI_OPT_ARG,
      "Hard memory limit of the VM's QEMU (suffix M or G); at least the guest's memory." },
    { "balloon", "MIB", CLI_OPT_ARG,
      "Balloon target: the memory the guest keeps (suffix M or G; q35 only)." },
    { "cpu-affinity", "LIST", CLI_OPT_ARG,
      "Host CPUs the vCPU threads may run on, comma-separated (\"0,2,3\")." },
    { "emulator-cpus", "LIST", CLI_OPT_ARG,
      "Host CPUs QEMU's other threads (main loop, workers) may run on." },
    { "iothread-cpus", "LIST", CLI_OPT_ARG, "Host CPUs the disks' iothreads may run on." },
    { "numa-nodes", "LIST", CLI_OPT_ARG,
      "Host NUMA nodes the guest's memory may come from (cgroup cpuset.mems)." },
    { "disk", "INDEX", CLI_OPT_ARG, "The disk the --disk-* options apply to (default 0)." },
    { "disk-iops", "N", CLI_OPT_ARG, "Total I/O operations per second." },
    { "disk-read-iops", "N", CLI_OPT_ARG, "Read operations per second." },
    { "disk-write-iops", "N", CLI_OPT_ARG, "Write operations per second." },
    { "disk-bps", "BYTES", CLI_OPT_ARG, "Total bytes per second." },
    { "disk-read-bps", "BYTES", CLI_OPT_ARG, "Read bytes per second." },
    { "disk-write-bps", "BYTES", CLI_OPT_ARG, "Written bytes per second." },
    { "disk-iops-burst", "N", CLI_OPT_ARG, "Burst for --disk-iops." },
    { "disk-bps-burst", "BYTES", CLI_OPT_ARG, "Burst for --disk-bps." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_wait_only[] = {
    OPT_NO_WAIT,
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_stop[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "How long the guest gets to power down before QEMU is killed: default 60, 0 kills "
      "at once." },
    OPT_NO_WAIT,
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_delete[] = {
    { "force", NULL, 0,
      "Kill the VM first if it is not stopped (no ACPI power-down, no waiting for the "
      "guest)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_console[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "Leave after this many seconds (decimals allowed) and exit 0. For scripts." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_vm_log[] = {
    { "tail", "BYTES", CLI_OPT_ARG, "Only the last BYTES bytes of the saved output." },
    { "follow", NULL, 0,
      "After the saved output, keep printing new output as it comes (read-only console) "
      "until the VM's console closes, Ctrl-C, or --timeout." },
    { "timeout", "SECONDS", CLI_OPT_ARG, "With --follow: stop after this many seconds, exit 0." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_events[] = {
    { "since", "ID", CLI_OPT_ARG,
      "First replay the buffered events newer than event ID (0 replays all of them)." },
    { "count", "N", CLI_OPT_ARG, "Exit 0 after N events." },
    { "timeout", "SECONDS", CLI_OPT_ARG, "Exit 0 after this many seconds." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_net_create[] = {
    { "type", "TYPE", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "nat (a private subnet with DHCP and masquerade out), isolated (DHCP, no way out) or "
      "bridged (NICs join an existing host bridge)." },
    { "subnet", "CIDR", CLI_OPT_ARG,
      "nat/isolated: the IPv4 network, e.g. 10.10.0.0/24; the gateway is its first address. "
      "Default: a free 10.X.Y.0/24." },
    { "bridge", "NAME", CLI_OPT_ARG, "bridged: the existing host bridge." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_net_forward[] = {
    { "vm", "NAME", CLI_OPT_ARG | CLI_OPT_REQUIRED, "The VM to reach (it has a NIC here)." },
    { "host-port", "PORT", CLI_OPT_ARG | CLI_OPT_REQUIRED, "Port on the host's addresses." },
    { "vm-port", "PORT", CLI_OPT_ARG | CLI_OPT_REQUIRED, "Port in the VM." },
    { "proto", "tcp|udp", CLI_OPT_ARG, "Protocol (default tcp)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_nic_link[] = {
    { "state", "up|down", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "The link state the guest sees (carrier); kept in the spec for the next start." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_sg_rule[] = {
    { "proto", "tcp|udp|icmp|any", CLI_OPT_ARG, "Protocol (default tcp)." },
    { "ports", "PORT[-PORT]", CLI_OPT_ARG,
      "Destination port or range, e.g. 80 or 8000-8080 (tcp and udp only; default all)." },
    { "cidr", "NET/LEN", CLI_OPT_ARG,
      "Source addresses allowed: an IPv4 network (10.0.0.0/8) for IPv4 only or an IPv6 "
      "network (2001:db8::/32) for IPv6 only (default anywhere, both families)." },
    { NULL, NULL, 0, NULL },
};

const cli_opt cli_global_opts[] = {
    { "socket", "PATH", CLI_OPT_ARG,
      "The unix socket of kvmhostd. Default: $KVMHOST_SOCKET, else " KH_DEFAULT_SOCKET "." },
    { "url", "URL", CLI_OPT_ARG,
      "Talk to kvmhostd over TCP at http://HOST:PORT or https://HOST:PORT instead (kvmhostd "
      "--listen). Needs the API token. The console over https is not supported." },
    { "token-file", "FILE", CLI_OPT_ARG,
      "With --url: read the bearer token from FILE (kvmhostd writes it to "
      "STATE_DIR/api-token). Default: $KVMHOST_TOKEN." },
    { "json", NULL, 0,
      "Print the API's JSON as it comes (indented) instead of tables and key: value "
      "lines. Errors still go to stderr as text." },
    { "help", NULL, 0, "Show help: with a command, its options and examples. 'kvmhost help NOUN VERB' is the "
      "same as 'kvmhost NOUN VERB --help'." },
    { "version", NULL, 0, "Print the client version and exit." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_pool_create[] = {
    { "path", "DIR", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "An existing directory on the host (an NFS mount, a bigger disk)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_create[] = {
    { "size", "SIZE", CLI_OPT_ARG,
      "Virtual size: bytes or with a unit (512M, 10G, 1T; powers of 1024). Required "
      "unless --backing or --import gives it." },
    { "format", "FMT", CLI_OPT_ARG, "qcow2 (the default) or raw." },
    { "backing", "[POOL/]VOL", CLI_OPT_ARG,
      "Make a qcow2 overlay on this volume: a linked clone, made in O(1)." },
    { "preallocate", NULL, 0, "Allocate the whole size now (refused if it does not fit)." },
    { "import", "FILE", CLI_OPT_ARG,
      "Copy this host image (of --format, never guessed). Images that name a backing or "
      "data file are refused." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_list[] = {
    { "pool", "POOL", CLI_OPT_ARG, "The pool (default: default)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_upload[] = {
    { "format", "FORMAT", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "What the file is: qcow2 or raw. kvmhostd checks it (qemu-img), never guesses it." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_disk_attach[] = {
    { "readonly", NULL, 0,
      "Attach read-only: the guest cannot write. A template's base, or a volume other VMs "
      "also use, is attached only read-only." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_disk_detach[] = {
    { "timeout", "SECONDS", CLI_OPT_ARG,
      "How long the guest of a running VM may take to release the disk (default 30)." },
    { NULL, NULL, 0, NULL },
};

static const cli_opt opts_volume_resize[] = {
    { "size", "SIZE", CLI_OPT_ARG | CLI_OPT_REQUIRED,
      "The new size (512M, 10G, ...); volumes only grow." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_commands[] = {
    {
        "vm", "create", "NAME", "define a new virtual machine",
        "Define a VM called NAME (letters, digits, '-', '_', '.'; at most 64; not starting "
        "with '.' or '-'). It is created stopped; start it with 'kvmhost vm start NAME'. "
        "kvmhostd checks every value and answers with exit status 2 on bad input and 5 when "
        "the name is taken.\n\n" DISKS_HELP,
        opts_vm_create,
        "# a VM booting its own kernel, with a qcow2 root disk\n"
        "$ kvmhost vm create web1 --vcpus 2 --memory 1G --kernel ./vmlinuz \\\n"
        "      --initrd ./initrd.img --cmdline \"console=ttyS0 root=/dev/vda\" \\\n"
        "      --disk web1.qcow2,format=qcow2\n"
        "# a raw data disk attached read-only; a path holding a comma\n"
        "$ kvmhost vm create db --vcpus 1 --memory 512 --disk /srv/db,format=raw \\\n"
        "      --disk /srv/a,,b.img,format=raw,readonly",
        cli_do_vm_create,
    },
    {
        "vm", "list", NULL, "list the virtual machines",
        "One line per VM: its name, state, virtual CPUs, memory, the accelerator of its "
        "QEMU (kvm or tcg) and QEMU's pid while it runs, and how long it has been up.",
        NULL,
        "$ kvmhost vm list\n"
        "$ kvmhost --json vm list",
        cli_do_vm_list,
    },
    {
        "vm", "show", "NAME", "show one virtual machine",
        "Everything kvmhostd knows about the VM: its spec (CPUs, memory, boot, disks, "
        "devices) and its runtime state, with the reason for the state (\"crashed: ...\", "
        "\"guest shut down\", ...).",
        NULL,
        "$ kvmhost vm show web1",
        cli_do_vm_show,
    },
    {
        "vm", "edit", "NAME", "change the spec of a virtual machine",
        "Change the given fields and leave the others as they are. A stopped VM accepts every "
        "field; a running one only --description (anything else fails with exit status 5). "
        "--kernel, --initrd and --cmdline change only that part of the boot settings. --disk "
        "replaces the whole disk list, in the order given; the SPEC is the one of vm "
        "create.\n\n" DISKS_HELP,
        opts_vm_edit,
        "$ kvmhost vm edit web1 --vcpus 4 --memory 4G\n"
        "$ kvmhost vm edit web1 --description \"front end, team A\"\n"
        "$ kvmhost vm edit web1 --disk web1.qcow2,format=qcow2 \\\n"
        "      --disk data.img,format=raw",
        cli_do_vm_edit,
    },
    {
        "vm", "top", NULL, "live CPU, memory and disk use of the VMs",
        "A virt-top-like view from the daemon's samples (taken every 10 s by default): the "
        "host's CPU, memory and load, then one line per running VM with its CPU use in "
        "percent of one host CPU, the memory charged to its cgroup, its QEMU's resident "
        "memory and its disk rates. Refreshes until Ctrl-C; --once (or --json, or a stdout "
        "that is not a terminal) prints one frame.",
        opts_vm_top,
        "$ kvmhost vm top\n"
        "$ kvmhost vm top --once --sort mem\n"
        "$ kvmhost --json vm top",
        cli_do_vm_top,
    },
    {
        "vm", "limit", "NAME", "show or change the limits of a VM",
        "Without options, show the VM's limits. With options, change them; a running VM "
        "takes them at once (CPU and memory through its cgroup, disk limits through QEMU's "
        "I/O throttling) and keeps them across restarts. The value \"none\" removes a "
        "limit. A memory limit under what QEMU already uses fails with exit status 5 and "
        "changes nothing.",
        opts_vm_limit,
        "$ kvmhost vm limit web1 --cpu-max 20 --memory-max 1G\n"
        "$ kvmhost vm limit web1 --disk 0 --disk-iops 100 --disk-bps 10485760\n"
        "$ kvmhost vm limit web1 --cpu-affinity 2,3\n"
        "$ kvmhost vm limit web1 --cpu-max none\n"
        "$ kvmhost vm limit web1",
        cli_do_vm_limit,
    },
    {
        "vm", "start", "NAME", "start a virtual machine",
        "Start QEMU for the VM and wait until it runs. " ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm start web1\n"
        "$ id=$(kvmhost vm start web1 --no-wait) && kvmhost task show \"$id\"",
        cli_do_vm_action,
    },
    {
        "vm", "stop", "NAME", "power a virtual machine down",
        "Ask the guest to power down (ACPI) and kill QEMU if it has not within --timeout "
        "seconds. " ACTION_TAIL,
        opts_vm_stop,
        "$ kvmhost vm stop web1\n"
        "$ kvmhost vm stop web1 --timeout 10",
        cli_do_vm_action,
    },
    {
        "vm", "kill", "NAME", "kill the QEMU of a virtual machine at once",
        "Kill QEMU without asking the guest: like pulling the power cord. " ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm kill web1",
        cli_do_vm_action,
    },
    {
        "vm", "reboot", "NAME", "reset a virtual machine",
        "Reset the VM (QEMU's system_reset): like the reset button, the guest is not asked. "
        ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm reboot web1",
        cli_do_vm_action,
    },
    {
        "vm", "pause", "NAME", "pause the virtual CPUs",
        "Stop running the VM's virtual CPUs; its memory and devices stay as they are. "
        ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm pause web1",
        cli_do_vm_action,
    },
    {
        "vm", "resume", "NAME", "resume the virtual CPUs of a paused VM",
        "Run the virtual CPUs of a paused VM again. " ACTION_TAIL,
        opts_wait_only,
        "$ kvmhost vm resume web1",
        cli_do_vm_action,
    },
    {
        "vm", "delete", "NAME", "delete a stopped virtual machine",
        "Remove the VM's definition and the files kvmhostd keeps for it (logs, sockets). Disk "
        "images named with --disk are never deleted. A VM that is not stopped is refused "
        "(exit status 5) unless --force, which kills it first. There is no confirmation "
        "prompt. With --json nothing is printed on success.",
        opts_vm_delete,
        "$ kvmhost vm delete web1\n"
        "$ kvmhost vm delete web1 --force",
        cli_do_vm_delete,
    },
    {
        "vm", "console", "NAME", "attach to the serial console",
        "Connect the terminal to the VM's serial console (a WebSocket of kvmhostd; several "
        "people may watch the same console). On a terminal, kvmhost prints \"Connected to "
        "NAME (escape character is ^])\" on stderr, puts the terminal in raw mode (every key, "
        "Ctrl-C included, goes to the guest) and restores it when it leaves; Ctrl-] detaches. "
        "When stdin is not a terminal (a pipe or a file), stdin is sent as is until its end, "
        "the guest's output keeps being copied to stdout, and kvmhost leaves when kvmhostd "
        "closes the console, on SIGINT or SIGTERM, or after --timeout; all of these exit 0. "
        "Over --url only http:// works (no TLS for the console).",
        opts_vm_console,
        "$ kvmhost vm console web1\n"
        "$ printf 'uname -a\\n' | kvmhost vm console web1 --timeout 3",
        cli_do_vm_console,
    },
    {
        "vm", "log", "NAME", "print the serial console output",
        "Print what the VM wrote on its serial console, as kvmhostd saved it (at most the last "
        "MiB). The output is the guest's bytes, also with --json. With --follow, kvmhost then "
        "watches the console (read-only) and prints new output as it comes; output written "
        "in the instant between the two may be missed or shown twice.",
        opts_vm_log,
        "$ kvmhost vm log web1 --tail 4096\n"
        "$ kvmhost vm log web1 --follow",
        cli_do_vm_log,
    },
    {
        "network", "create", "NAME", "create a network",
        "Create a network called NAME. A nat or isolated network gets a Linux bridge of "
        "kvmhost's own (khbr + 8 hex digits), an IPv4 subnet whose first address is the "
        "gateway, and a dnsmasq serving DHCP (and DNS) on that bridge only; a nat network "
        "also masquerades its guests' traffic out through the host (nftables table "
        "'inet kvmhost'). A bridged network attaches NICs to a bridge the administrator "
        "made. VMs join a network with \"nics\": [{\"network\": \"NAME\"}] in their spec.",
        opts_net_create,
        "$ kvmhost network create lan --type nat --subnet 10.10.0.0/24\n"
        "$ kvmhost network create lab --type isolated\n"
        "$ kvmhost network create uplink --type bridged --bridge br0",
        cli_do_net_create,
    },
    {
        "network", "list", NULL, "list the networks",
        "One line per network: name, type, bridge, subnet, and how many NICs and port "
        "forwards it has.",
        NULL,
        "$ kvmhost network list",
        cli_do_net_list,
    },
    {
        "network", "show", "NAME", "show one network",
        "Everything about the network: subnet, gateway, DHCP range, bridge, the NICs on it, "
        "its port forwards and its dnsmasq's pid.",
        NULL,
        "$ kvmhost network show lan",
        cli_do_net_show,
    },
    {
        "network", "delete", "NAME", "delete a network no VM uses",
        "Remove the network, its bridge, rules and dnsmasq. A network that a VM has a NIC on "
        "is refused (exit status 5): remove the NIC or the VM first.",
        NULL,
        "$ kvmhost network delete lan",
        cli_do_net_delete,
    },
    {
        "network", "leases", "NAME", "show the DHCP leases of a network",
        "The leases dnsmasq handed out on a nat or isolated network, with the VM each MAC "
        "belongs to.",
        NULL,
        "$ kvmhost network leases lan",
        cli_do_net_leases,
    },
    {
        "network", "forward", "NAME", "forward a host port to a VM",
        "On a nat network, forward --host-port on every address of the host to --vm-port of "
        "the VM's address on the network (its static ip, else its current DHCP lease).",
        opts_net_forward,
        "$ kvmhost network forward lan --vm web1 --host-port 8080 --vm-port 80",
        cli_do_net_forward,
    },
    {
        "vm", "nic add", "VM SPEC", "add a NIC to a VM",
        "Add a virtio NIC to the VM. SPEC is NETWORK[,mac=MAC][,ip=IP][,link=down], as "
        "--nic of 'vm create'. A running q35 VM gets it at once (PCIe hot-plug onto a free "
        "port: at most four hot-plugged NICs at a time); a stopped VM has it from its next "
        "start. The NIC is the VM's last; its number is printed.",
        NULL,
        "$ kvmhost vm nic add web1 lan\n"
        "$ kvmhost vm nic add web1 lan,ip=10.10.0.20",
        cli_do_vm_nic_add,
    },
    {
        "vm", "nic remove", "VM INDEX", "remove a NIC from a VM",
        "Remove NIC number INDEX (0 is the first; see 'vm show'). On a running VM only NICs "
        "hot-plugged since it started can go: the guest is asked to release the device "
        "(up to 30 s), then its tap and firewall rules are removed. NICs after it move up "
        "one number.",
        NULL,
        "$ kvmhost vm nic remove web1 1",
        cli_do_vm_nic_remove,
    },
    {
        "vm", "nic link", "VM INDEX", "set a NIC's link up or down",
        "Set the link of NIC number INDEX: down, the guest sees no carrier and no traffic "
        "passes; up, it is back. Applies at once to a running VM and stays in the spec.",
        opts_nic_link,
        "$ kvmhost vm nic link web1 0 --state down",
        cli_do_vm_nic_link,
    },
    {
        "secgroup", "list", NULL, "list the security groups",
        "One line per security group: its name and how many rules it has.",
        NULL,
        "$ kvmhost secgroup list",
        cli_do_sg_list,
    },
    {
        "secgroup", "show", "NAME", "show a security group's rules",
        "The group's rules, numbered from 0. A NIC with security groups accepts inbound "
        "traffic that a rule of one of its groups allows (and replies to its own traffic); "
        "the rest inbound is dropped. Outbound is always allowed.",
        NULL,
        "$ kvmhost secgroup show web",
        cli_do_sg_show,
    },
    {
        "secgroup", "create", "NAME", "create a security group",
        "Create the group, empty or with one rule from --proto/--ports/--cidr. Attach it to "
        "NICs with \"security_groups\": [\"NAME\"] in their spec.",
        opts_sg_rule,
        "$ kvmhost secgroup create web --proto tcp --ports 80",
        cli_do_sg_create,
    },
    {
        "secgroup", "delete", "NAME", "delete a security group",
        "Delete the group. A group that a NIC uses is refused (exit status 5).",
        NULL,
        "$ kvmhost secgroup delete web",
        cli_do_sg_delete,
    },
    {
        "secgroup", "rule add", "NAME", "add a rule to a security group",
        "Append an inbound rule; the NICs that use the group get it at once.",
        opts_sg_rule,
        "$ kvmhost secgroup rule add web --proto tcp --ports 443\n"
        "$ kvmhost secgroup rule add web --proto icmp --cidr 10.0.0.0/8\n"
        "$ kvmhost secgroup rule add web --proto tcp --ports 22 --cidr 2001:db8::/32",
        cli_do_sg_rule_add,
    },
    {
        "secgroup", "rule delete", "NAME RULE", "delete a rule of a security group",
        "Delete rule number RULE (see 'secgroup show'); the rules after it move up one.",
        NULL,
        "$ kvmhost secgroup rule delete web 1",
        cli_do_sg_rule_delete,
    },
    {
        "alert", "list", NULL, "list the alerts pending or firing",
        "The alerts whose rule holds now, one per line: rule, VM (- for host rules), state "
        "(pending until the condition has held for the rule's for_seconds, then firing), how "
        "long, the value, and for a trend rule when the threshold is reached. Then the "
        "webhook and its counters of POSTs sent, failed and dropped.",
        NULL,
        "$ kvmhost alert list\n"
        "$ kvmhost --json alert list",
        cli_do_alert_list,
    },
    {
        "alert", "rules", NULL, "show the alert rules",
        "The rules, one per line: name, scope (host or vm), metric, condition, how long it "
        "must hold, and for a trend rule its horizon and window; then the webhook. With "
        "--json, {\"rules\", \"webhook\"} as 'alert rules set --file' reads it. See "
        "docs/metrics.md for the metrics.",
        NULL,
        "$ kvmhost alert rules\n"
        "$ kvmhost --json alert rules > rules.json",
        cli_do_alert_rules,
    },
    {
        "alert", "rules set", NULL, "replace the alert rules",
        "Replace every rule with those of the file (until kvmhostd restarts; "
        "kvmhostd --alert-rules FILE sets them at start). Alerts pending or firing are "
        "resolved. The webhook stays as it is unless the file has \"webhook\". A file that "
        "is not JSON, or a rule kvmhostd refuses, changes nothing (exit status 2).",
        opts_alert_rules_set,
        "$ kvmhost alert rules set --file rules.json",
        cli_do_alert_rules_set,
    },
    {
        "alert", "webhook set", "URL", "POST alerts to a URL",
        "Make kvmhostd POST every alert.firing and alert.resolved event as JSON to URL (http "
        "or https). The rules stay as they are. Failed POSTs are counted (see 'alert "
        "list'), never retried.",
        opts_alert_webhook_set,
        "$ kvmhost alert webhook set https://hooks.example/kvmhost --timeout 10",
        cli_do_alert_webhook_set,
    },
    {
        "alert", "webhook clear", NULL, "stop POSTing alerts",
        "Turn the webhook off. The rules stay as they are.",
        NULL,
        "$ kvmhost alert webhook clear",
        cli_do_alert_webhook_clear,
    },
    {
        "host", "show", NULL, "show facts about the host",
        "The host as kvmhostd sees it: name, versions of kvmhostd and QEMU, the accelerator "
        "VMs get (kvm, or tcg with the reason KVM is not usable), CPUs, memory, cgroup "
        "version, VM counts, paths and uptime.",
        NULL,
        "$ kvmhost host show",
        cli_do_host_show,
    },
    {
        "task", "show", "ID", "show one task",
        "A task is a long operation (start, stop, ...): its kind, VM, state (running, "
        "succeeded, failed), progress, message and error.",
        NULL,
        "$ kvmhost task show c0ffee00-1234-4abc-8def-0123456789ab",
        cli_do_task_show,
    },
    {
        "task", "list", NULL, "list recent tasks",
        "The tasks kvmhostd remembers, one per line: id, kind, VM, state, progress, when it "
        "began, and its message (the error for a failed task).",
        NULL,
        "$ kvmhost task list",
        cli_do_task_list,
    },
    {
        "events", NULL, NULL, "follow what happens on the host",
        "Print kvmhostd's events as they happen (VMs created, changed, deleted, state "
        "changes, task progress, host warnings), one line each: time, type, VM, then the "
        "details as key=value. With --json each line is the event's JSON object. Runs until "
        "Ctrl-C, --count or --timeout; if kvmhostd ends the stream the exit status is 7.",
        opts_events,
        "$ kvmhost events\n"
        "$ kvmhost --json events --since 0 --count 10",
        cli_do_events,
    },
    {
        "version", NULL, NULL, "show the versions of kvmhost, kvmhostd and QEMU",
        "Print the client version, then ask kvmhostd for its own and QEMU's. When kvmhostd "
        "cannot be reached the client version is still printed and the exit status is 7. "
        "'kvmhost --version' prints the client version only.",
        NULL,
        "$ kvmhost version",
        cli_do_version,
    },
    {
        "snapshot", "create", "VM SNAP", "snapshot a VM",
        "Take snapshot SNAP of the VM. While the VM runs, the snapshot holds its memory and "
        "device state too (QEMU's internal qcow2 snapshots); a stopped VM gets a disk-only "
        "snapshot. Every writable disk must be a qcow2 volume. kvmhost waits for the task; "
        "the snapshot is recorded only once it is complete.",
        NULL,
        "$ kvmhost snapshot create web1 before-upgrade",
        cli_do_snapshot_create,
    },
    {
        "snapshot", "list", "VM", "list the snapshots of a VM",
        "One line per snapshot: its name, whether it holds the VM's memory, and when it was "
        "taken.",
        NULL,
        "$ kvmhost snapshot list web1",
        cli_do_snapshot_list,
    },
    {
        "snapshot", "revert", "VM SNAP", "go back to a snapshot",
        "Revert the VM to SNAP. A snapshot with memory needs the VM running: it runs on from "
        "the instant of the snapshot, and everything since is lost. A disk-only snapshot "
        "needs the VM stopped. The other snapshots stay.",
        NULL,
        "$ kvmhost snapshot revert web1 before-upgrade",
        cli_do_snapshot_revert,
    },
    {
        "snapshot", "delete", "VM SNAP", "delete one snapshot",
        "Delete SNAP. Snapshots are independent: the others keep all their data, whichever "
        "is deleted.",
        NULL,
        "$ kvmhost snapshot delete web1 before-upgrade",
        cli_do_snapshot_delete,
    },
    {
        "template", "create", "VM", "make a stopped VM a template",
        "Turn the stopped VM into a template: its volumes become read-only bases and it can "
        "no longer start. Every disk must be a volume. Clone it with 'kvmhost vm create NAME "
        "--from-template VM [--full]': a linked clone is a qcow2 overlay per volume, made "
        "in O(1) whatever the size; many clones can be made at once.",
        NULL,
        "$ kvmhost template create debian12\n"
        "$ kvmhost vm create web1 --from-template debian12",
        cli_do_template_create,
    },
    {
        "template", "list", NULL, "list the templates",
        "One line per template: its name, CPUs, memory and disks.",
        NULL,
        "$ kvmhost template list",
        cli_do_template_list,
    },
    {
        "pool", "list", NULL, "list the storage pools",
        "One line per pool: name, type, capacity, space used and free on its file system, "
        "how many volumes it holds, and its directory. The pool \"default\" lives in the "
        "state directory and always exists.",
        NULL,
        "$ kvmhost pool list",
        cli_do_pool_list,
    },
    {
        "pool", "show", "NAME", "show one storage pool",
        "The pool's type, directory, capacity, allocation and free space (statvfs of its "
        "file system) and its number of volumes.",
        NULL,
        "$ kvmhost pool show default",
        cli_do_pool_show,
    },
    {
        "pool", "create", "NAME", "add a pool at an existing directory",
        "Add a pool of type dir at an existing, writable directory: an NFS mount or a "
        "bigger disk. Volumes are files in it named by their id. kvmhostd does not create "
        "or remove the directory.",
        opts_pool_create,
        "$ kvmhost pool create fast --path /srv/nvme/kvmhost",
        cli_do_pool_create,
    },
    {
        "pool", "delete", "NAME", "forget an empty pool",
        "Forget a pool that holds no volumes. Its directory stays. The default pool cannot "
        "be deleted.",
        NULL,
        "$ kvmhost pool delete fast",
        cli_do_pool_delete,
    },
    {
        "volume", "create", "[POOL/]NAME", "create a volume",
        "Create a qcow2 or raw volume in POOL (default: default): empty with --size, a "
        "linked clone of another volume with --backing, or a copy of a host image with "
        "--import. A size over the pool's free space is refused (exit status 2). NAME "
        "takes letters, digits, '-', '_' and '.'.",
        opts_volume_create,
        "$ kvmhost volume create data1 --size 10G\n"
        "$ kvmhost volume create default/web1-root --backing debian12\n"
        "$ kvmhost volume create debian12 --format qcow2 --import ./debian-12.qcow2",
        cli_do_volume_create,
    },
    {
        "volume", "list", NULL, "list the volumes of a pool",
        "One line per volume: pool/name, format, virtual size, space allocated on the host, "
        "its backing volume and the VMs that use it.",
        opts_volume_list,
        "$ kvmhost volume list\n"
        "$ kvmhost volume list --pool fast",
        cli_do_volume_list,
    },
    {
        "volume", "show", "[POOL/]NAME", "show one volume",
        "Everything about the volume, with its backing chain as qemu-img reads it: virtual "
        "and allocated size and format of every layer.",
        NULL,
        "$ kvmhost volume show default/data1",
        cli_do_volume_show,
    },
    {
        "volume", "resize", "[POOL/]NAME", "grow a volume",
        "Grow the volume to --size. Volumes never shrink. Refused (exit status 5) while a "
        "running VM uses it.",
        opts_volume_resize,
        "$ kvmhost volume resize data1 --size 20G",
        cli_do_volume_resize,
    },
    {
        "volume", "upload", "[POOL/]NAME FILE", "make a volume from an image file",
        "Send FILE to kvmhostd, streamed, as the new volume NAME. The pool's free space is the "
        "limit (exit status 2 beyond it). The image must be of the --format given, and one "
        "that names no other file (no backing file, no external data file; exit status 2 "
        "otherwise). A failed upload leaves nothing.",
        opts_volume_upload,
        "$ kvmhost volume upload default/debian debian-12.qcow2 --format qcow2",
        cli_do_volume_upload,
    },
    {
        "volume", "download", "[POOL/]NAME FILE", "save a volume's image to a file",
        "Stream the volume's image file (as it is: qcow2 or raw) into FILE, which must not "
        "exist (written as FILE.part, renamed when complete). Refused (exit status 5) while a "
        "running VM writes to the volume.",
        NULL,
        "$ kvmhost volume download default/debian backup.qcow2",
        cli_do_volume_download,
    },
    {
        "disk", "attach", "VM [POOL/]VOLUME", "attach a volume to a VM as a disk",
        "Add the volume as the VM's last disk. A stopped VM's spec changes. A running q35 VM "
        "gets it at once (hot-plug: a virtio disk on a free PCIe hot-plug port, with its own "
        "I/O thread; up to 4 hot-plugged disks) and keeps it as an ordinary disk at the next "
        "start. Refused (exit status 5) for a volume another VM writes to, a template's base "
        "attached writable, or a VM that is busy.",
        opts_disk_attach,
        "$ kvmhost disk attach web1 default/data1\n"
        "$ kvmhost disk attach web1 iso/tools --readonly",
        cli_do_disk_attach,
    },
    {
        "disk", "detach", "VM INDEX", "detach disk INDEX (0 is the first) of a VM",
        "Remove the disk from the VM; the volume stays. On a running VM only a hot-plugged "
        "disk can go: the guest is asked to release it, and kvmhost waits for that (exit "
        "status 8 on a timeout, and the disk stays attached).",
        opts_disk_detach,
        "$ kvmhost disk detach web1 1",
        cli_do_disk_detach,
    },
    {
        "volume", "delete", "[POOL/]NAME", "delete a volume",
        "Delete the volume and its file. Refused (exit status 5) while a VM refers to it or "
        "another volume is based on it.",
        NULL,
        "$ kvmhost volume delete data1",
        cli_do_volume_delete,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};

static const struct {
    const char *noun;
    const char *summary;
} noun_summaries[] = {
    { "vm", "manage virtual machines" },
    { "network", "manage networks" },
    { "secgroup", "manage security groups (inbound firewall rules of NICs)" },
    { "alert", "show alerts and set alert rules and the webhook" },
    { "host", "show the host" },
    { "task", "follow long operations" },
    { "pool", "manage storage pools" },
    { "disk", "attach and detach the disks of VMs (hot-plug when they run)" },
    { "template", "make templates of VMs, to clone" },
    { "snapshot", "snapshot VMs and go back to a snapshot" },
    { "volume", "manage disk volumes in pools" },
    { "events", "follow what happens on the host" },
    { "version", "show versions" },
};

/* What each exit status means; the codes that lead to it come from err.h. */
static const char *const exit_meaning[] = {
    "success",
    "kvmhostd failed inside, or QEMU refused or died",
    "usage error, or the request was invalid",
    "not allowed: missing or wrong token, or forbidden",
    "no such VM, task or route",
    "the VM's state forbids it now: running, busy, or the name is taken",
    "kvmhostd is busy; try again later",
    "kvmhostd cannot be reached (is kvmhostd running?), or the host cannot do it now",
    "gave up waiting",
};

/* ---- lookup ---- */

const cli_cmd *cli_cmd_find(const char *noun, const char *verb)
{
    for (const cli_cmd *c = cli_commands; c->noun; c++) {
        if (strcmp(c->noun, noun) != 0)
            continue;
        if (!c->verb && !verb)
            return c;
        if (c->verb && verb && strcmp(c->verb, verb) == 0)
            return c;
    }
    return NULL;
}

bool cli_noun_exists(const char *noun)
{
    for (const cli_cmd *c = cli_commands; c->noun; c++)
        if (strcmp(c->noun, noun) == 0)
            return true;
    return false;
}

bool cli_noun_has_verbs(const char *noun)
{
    for (const cli_cmd *c = cli_commands; c->noun; c++)
        if (strcmp(c->noun, noun) == 0 && c->verb)
            return true;
    return false;
}

const char *cli_noun_summary(const char *noun)
{
    for (size_t i = 0; i < KH_ARRAY_LEN(noun_summaries); i++)
        if (strcmp(noun_summaries[i].noun, noun) == 0)
            return noun_summaries[i].summary;
    return NULL;
}

/* ---- parsing ---- */

void cli_usage_error(cli_ctx *ctx, const cli_cmd *cmd, kh_err *err, const char *fmt, ...)
{
    char msg[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kh_err_set(err, KH_E_INVALID, "%s", msg);
    if (ctx) {
        ctx->usage_error = true;
        ctx->usage_cmd = cmd;
    }
}

int cli_global_opt(cli_ctx *ctx, const char *arg, const char *next, bool *used_next,
                   kh_err *err)
{
    *used_next = false;
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    static const char *const valued[] = { "socket", "url", "token-file" };
    const char **slot[] = { &ctx->socket_opt, &ctx->url, &ctx->token_file };
    for (size_t i = 0; i < KH_ARRAY_LEN(valued); i++) {
        if (strlen(valued[i]) != nlen || strncmp(name, valued[i], nlen) != 0)
            continue;
        const char *v = eq ? eq + 1 : next;
        if (!v) {
            cli_usage_error(ctx, NULL, err, "--%s needs a value", valued[i]);
            return -1;
        }
        if (!eq)
            *used_next = true;
        *slot[i] = v;
        return 1;
    }
    if (nlen == 4 && strncmp(name, "json", 4) == 0) {
        if (eq) {
            cli_usage_error(ctx, NULL, err, "--json takes no value");
            return -1;
        }
        ctx->json = true;
        return 1;
    }
    return 0;
}

static int opt_index(const cli_cmd *cmd, const char *name, size_t nlen)
{
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++)
        if (strlen(cmd->opts[i].name) == nlen && strncmp(cmd->opts[i].name, name, nlen) == 0)
            return i;
    return -1;
}

int cli_args_parse(const cli_cmd *cmd, int argc, const char *const *argv, cli_ctx *ctx,
                   cli_args *out, kh_err *err)
{
    memset(out, 0, sizeof(*out));
    out->cmd = cmd;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_pos && strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (!only_pos && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            out->help = true;
            return 0;
        }
        if (!only_pos && arg[0] == '-' && arg[1] != '\0') {
            if (arg[1] != '-') {
                cli_usage_error(ctx, cmd, err, "unknown option '%s'", arg);
                return -1;
            }
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            int idx = opt_index(cmd, name, nlen);
            if (idx < 0) {
                bool used_next;
                int g = cli_global_opt(ctx, arg, i + 1 < argc ? argv[i + 1] : NULL,
                                       &used_next, err);
                if (g < 0) {
                    ctx->usage_cmd = cmd; /* the usage error is already marked */
                    return -1;
                }
                if (g == 0) {
                    cli_usage_error(ctx, cmd, err, "unknown option '--%.*s'", (int)nlen, name);
                    return -1;
                }
                if (used_next)
                    i++;
                continue;
            }
            const cli_opt *o = &cmd->opts[idx];
            const char *value = "";
            if (o->flags & CLI_OPT_ARG) {
                if (eq) {
                    value = eq + 1;
                } else if (i + 1 < argc) {
                    value = argv[++i];
                } else {
                    cli_usage_error(ctx, cmd, err, "--%s needs a value (%s)", o->name,
                                    o->metavar);
                    return -1;
                }
            } else if (eq) {
                cli_usage_error(ctx, cmd, err, "--%s takes no value", o->name);
                return -1;
            }
            if (out->vals[idx] && !(o->flags & CLI_OPT_REPEAT)) {
                cli_usage_error(ctx, cmd, err, "--%s is given twice", o->name);
                return -1;
            }
            if (!out->vals[idx])
                out->vals[idx] = kh_strv_new();
            kh_strv_add(out->vals[idx], value);
            continue;
        }
        if (cmd->positional && !out->pos) {
            out->pos = arg;
            continue;
        }
        if (cmd->positional && strchr(cmd->positional, ' ') && !out->pos2) {
            out->pos2 = arg;
            continue;
        }
        cli_usage_error(ctx, cmd, err, "unexpected argument '%s'", arg);
        return -1;
    }
    if (cmd->positional && !out->pos) {
        cli_usage_error(ctx, cmd, err, "missing %s", cmd->positional);
        return -1;
    }
    if (cmd->positional && strchr(cmd->positional, ' ') && !out->pos2) {
        cli_usage_error(ctx, cmd, err, "missing %s", strchr(cmd->positional, ' ') + 1);
        return -1;
    }
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++) {
        const cli_opt *o = &cmd->opts[i];
        if ((o->flags & CLI_OPT_REQUIRED) && !out->vals[i]) {
            cli_usage_error(ctx, cmd, err, "missing --%s %s", o->name, o->metavar);
            return -1;
        }
    }
    return 0;
}

void cli_args_clear(cli_args *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < CLI_MAX_OPTS; i++)
        kh_strv_free(a->vals[i]);
    memset(a, 0, sizeof(*a));
}

const kh_strv *cli_arg_all(const cli_args *a, const char *name)
{
    int idx = opt_index(a->cmd, name, strlen(name));
    if (idx < 0)
        abort(); /* a handler asked for an option its row does not have: a bug */
    return a->vals[idx];
}

const char *cli_arg(const cli_args *a, const char *name)
{
    const kh_strv *v = cli_arg_all(a, name);
    return v && v->n ? v->v[v->n - 1] : NULL;
}

bool cli_flag(const cli_args *a, const char *name)
{
    return cli_arg_all(a, name) != NULL;
}

/* ---- help ---- */

static char *command_name(const cli_cmd *cmd)
{
    return cmd->verb ? xasprintf("%s %s", cmd->noun, cmd->verb) : xstrdup(cmd->noun);
}

/* One synopsis token per option: "--vcpus N", "[--kernel PATH]", "[--disk SPEC]...". */
static char *opt_token(const cli_opt *o)
{
    char *core = o->metavar ? xasprintf("--%s %s", o->name, o->metavar)
                            : xasprintf("--%s", o->name);
    char *tok;
    if (o->flags & CLI_OPT_REQUIRED)
        tok = xasprintf("%s%s", core, (o->flags & CLI_OPT_REPEAT) ? "..." : "");
    else
        tok = xasprintf("[%s]%s", core, (o->flags & CLI_OPT_REPEAT) ? "..." : "");
    free(core);
    return tok;
}

static kh_strv *usage_tokens(const cli_cmd *cmd, bool full)
{
    kh_strv *t = kh_strv_new();
    kh_strv_add(t, "kvmhost");
    kh_strv_add(t, cmd->noun);
    if (cmd->verb)
        kh_strv_add(t, cmd->verb);
    if (cmd->positional)
        kh_strv_add(t, cmd->positional);
    bool optional = false;
    for (int i = 0; cmd->opts && cmd->opts[i].name; i++) {
        const cli_opt *o = &cmd->opts[i];
        if (full || (o->flags & CLI_OPT_REQUIRED))
            kh_strv_add_steal(t, opt_token(o));
        else
            optional = true;
    }
    if (optional)
        kh_strv_add(t, "[OPTIONS]");
    return t;
}

char *cli_usage_line(const cli_cmd *cmd, bool full)
{
    kh_strv *t = usage_tokens(cmd, full);
    char *s = kh_strv_join(t, " ");
    kh_strv_free(t);
    return s;
}

/* Print tokens wrapped: first line at indent, the rest at indent + 8. */
static void print_tokens(FILE *f, const kh_strv *t, int indent)
{
    int col = fprintf(f, "%*s", indent, "");
    for (size_t i = 0; i < t->n; i++) {
        int len = (int)strlen(t->v[i]);
        if (i > 0 && col + 1 + len > HELP_WIDTH) {
            fputc('\n', f);
            col = fprintf(f, "%*s", indent + 8, "");
        } else if (i > 0) {
            fputc(' ', f);
            col++;
        }
        fputs(t->v[i], f);
        col += len;
    }
    fputc('\n', f);
}

static void print_options(FILE *f, const cli_opt *opts)
{
    for (int i = 0; opts && opts[i].name; i++) {
        const cli_opt *o = &opts[i];
        if (strcmp(o->name, "help") == 0)
            fprintf(f, "    -h, --help\n");
        else if (o->metavar)
            fprintf(f, "    --%s %s\n", o->name, o->metavar);
        else
            fprintf(f, "    --%s\n", o->name);
        char *text = (o->flags & CLI_OPT_REQUIRED) ? xasprintf("%s Required.", o->help)
                     : (o->flags & CLI_OPT_REPEAT) ? xasprintf("%s May be repeated.", o->help)
                                                   : xstrdup(o->help);
        cli_wrap(f, text, 8, HELP_WIDTH);
        free(text);
    }
}

static void print_exit_status(FILE *f)
{
    fprintf(f, "EXIT STATUS\n");
    for (int status = 0; status < (int)KH_ARRAY_LEN(exit_meaning); status++) {
        kh_strv *names = kh_strv_new();
        for (int c = 1; c < KH_CODE__COUNT; c++)
            if (kh_code_exit_status((kh_code)c) == status)
                kh_strv_add(names, kh_code_name((kh_code)c));
        char *line;
        if (names->n) {
            char *joined = kh_strv_join(names, ", ");
            line = xasprintf("%d  %s (%s)", status, exit_meaning[status], joined);
            free(joined);
        } else {
            line = xasprintf("%d  %s", status, exit_meaning[status]);
        }
        /* Continuation lines align under the meaning. */
        kh_strv *words = kh_strv_new();
        char *save = NULL;
        for (char *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save))
            kh_strv_add(words, w);
        int col = fprintf(f, "    %s", words->v[0]);
        for (size_t i = 1; i < words->n; i++) {
            int len = (int)strlen(words->v[i]);
            if (i == 1) {
                col += fprintf(f, "  %s", words->v[i]);
            } else if (col + 1 + len > HELP_WIDTH) {
                col = fprintf(f, "\n%7s%s", "", words->v[i]) - 1;
            } else {
                col += fprintf(f, " %s", words->v[i]);
            }
        }
        fputc('\n', f);
        kh_strv_free(words);
        kh_strv_free(names);
        free(line);
    }
    fputc('\n', f);
}

static void print_examples(FILE *f, const char *examples)
{
    fprintf(f, "EXAMPLES\n");
    const char *p = examples;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "    %.*s\n", (int)n, p);
        if (!nl)
            break;
        p = nl + 1;
    }
    fputc('\n', f);
}

/* A list of commands: "    vm create NAME ... [OPTIONS]   summary". */
static void print_command_list(FILE *f, const char *noun)
{
    enum { COL = 32 };
    for (const cli_cmd *c = cli_commands; c->noun; c++) {
        if (noun && strcmp(c->noun, noun) != 0)
            continue;
        char *u = cli_usage_line(c, false);
        const char *shown = u + strlen("kvmhost ");
        int len = (int)strlen(shown);
        if (4 + len + 2 <= COL) {
            fprintf(f, "    %s%*s%s\n", shown, COL - 4 - len, "", c->summary);
        } else {
            fprintf(f, "    %s\n%*s%s\n", shown, COL, "", c->summary);
        }
        free(u);
    }
}

static char *render(void (*fn)(FILE *, const void *), const void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    fn(f, arg);
    fclose(f);
    return buf;
}

static void overview(FILE *f, const void *unused)
{
    fprintf(f, "NAME\n    kvmhost - manage the virtual machines of a kvmhostd host\n\n");
    fprintf(f, "SYNOPSIS\n    kvmhost [GLOBAL OPTIONS] NOUN VERB [ARGS]\n"
               "    kvmhost help [NOUN [VERB]]\n\n");
    fprintf(f, "DESCRIPTION\n");
    cli_wrap(f,
             "kvmhost is the command-line client of kvmhostd: every command is one or a few "
             "requests to kvmhostd's REST API, over its unix socket (the default) or TCP "
             "(--url). Output is meant for people (aligned tables, key: value lines); --json "
             "prints the API's JSON instead. Errors are printed on stderr as \"kvmhost: "
             "error: MESSAGE\", and the exit status tells their kind (see EXIT STATUS).\n\n"
             "Global options may come before or after the command. Run 'kvmhost help NOUN "
             "VERB' (or 'kvmhost NOUN VERB --help') for the options and examples of one "
             "command.",
             4, HELP_WIDTH);
    fprintf(f, "\nCOMMANDS\n");
    print_command_list(f, NULL);
    fprintf(f, "\nGLOBAL OPTIONS\n");
    print_options(f, cli_global_opts);
    fprintf(f, "\nENVIRONMENT\n");
    fprintf(f, "    KVMHOST_SOCKET\n");
    cli_wrap(f, "The unix socket of kvmhostd when --socket is not given.", 8, HELP_WIDTH);
    fprintf(f, "    KVMHOST_TOKEN\n");
    cli_wrap(f, "The bearer token for --url when --token-file is not given.", 8, HELP_WIDTH);
    fputc('\n', f);
    print_exit_status(f);
    print_examples(f, "$ kvmhost vm create web1 --vcpus 1 --memory 512 \\\n"
                      "      --disk web1.qcow2,format=qcow2\n"
                      "$ kvmhost vm start web1\n"
                      "$ kvmhost vm list\n"
                      "$ kvmhost vm console web1\n"
                      "$ kvmhost --url http://h1:8443 --token-file ~/.kvmhost-token host show");
}

static void noun_help(FILE *f, const void *arg)
{
    const char *noun = arg;
    fprintf(f, "NAME\n    kvmhost %s - %s\n\n", noun, cli_noun_summary(noun));
    fprintf(f, "SYNOPSIS\n    kvmhost [GLOBAL OPTIONS] %s VERB [ARGS]\n\n", noun);
    fprintf(f, "COMMANDS\n");
    print_command_list(f, noun);
    fprintf(f, "\n");
    char *text = xasprintf("Run 'kvmhost help %s VERB' for the options and examples of one "
                           "command, 'kvmhost --help' for the global options and exit "
                           "statuses.", noun);
    cli_wrap(f, text, 4, HELP_WIDTH);
    free(text);
}

static void command_help(FILE *f, const void *arg)
{
    const cli_cmd *cmd = arg;
    char *name = command_name(cmd);
    fprintf(f, "NAME\n    kvmhost %s - %s\n\n", name, cmd->summary);
    fprintf(f, "SYNOPSIS\n");
    kh_strv *t = usage_tokens(cmd, true);
    print_tokens(f, t, 4);
    kh_strv_free(t);
    fprintf(f, "\nDESCRIPTION\n");
    cli_wrap(f, cmd->description, 4, HELP_WIDTH);
    fputc('\n', f);
    if (cmd->opts && cmd->opts[0].name) {
        fprintf(f, "OPTIONS\n");
        print_options(f, cmd->opts);
        fputc('\n', f);
    }
    fprintf(f, "GLOBAL OPTIONS\n");
    cli_wrap(f, "--socket PATH, --url URL, --token-file FILE, --json, -h/--help: see "
                "'kvmhost --help'.", 4, HELP_WIDTH);
    fputc('\n', f);
    print_exit_status(f);
    print_examples(f, cmd->examples);
    fprintf(f, "SEE ALSO\n    kvmhost help%s%s\n", cmd->verb ? " " : "",
            cmd->verb ? cmd->noun : "");
    free(name);
}

char *cli_help_overview(void)
{
    return render(overview, NULL);
}

char *cli_help_noun(const char *noun)
{
    if (!cli_noun_has_verbs(noun)) {
        const cli_cmd *c = cli_cmd_find(noun, NULL);
        return c ? cli_help_command(c) : NULL;
    }
    return render(noun_help, noun);
}

char *cli_help_command(const cli_cmd *cmd)
{
    return render(command_help, cmd);
}

/* ---- the client for the global options ---- */

cli_client *cli_ctx_client(cli_ctx *ctx, kh_err *err)
{
    if (ctx->client)
        return ctx->client;
    if (ctx->url) {
        if (ctx->socket_opt) {
            cli_usage_error(ctx, NULL, err, "--socket and --url exclude each other");
            return NULL;
        }
        if (strncmp(ctx->url, "http://", 7) != 0 && strncmp(ctx->url, "https://", 8) != 0) {
            cli_usage_error(ctx, NULL, err, "--url needs http://HOST:PORT or https://HOST:PORT, "
                            "not '%s'", ctx->url);
            return NULL;
        }
        char *token = NULL;
        const char *env_token;
        if (ctx->token_file) {
            kh_err ferr = KH_ERR_INIT;
            token = kh_fs_read(ctx->token_file, 4096, NULL, &ferr);
            if (!token) {
                kh_err_set(err, KH_E_INVALID, "reading the token file: %s", ferr.msg);
                return NULL;
            }
        } else if ((env_token = getenv("KVMHOST_TOKEN")) && *env_token) {
            token = xstrdup(env_token);
        } else {
            cli_usage_error(ctx, NULL, err,
                            "--url needs the API token: --token-file FILE or KVMHOST_TOKEN");
            return NULL;
        }
        /* Trim the newline a file usually ends with. */
        size_t n = strlen(token);
        while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' ' ||
                         token[n - 1] == '\t'))
            token[--n] = '\0';
        if (!n || strpbrk(token, "\r\n")) {
            kh_err_set(err, KH_E_INVALID, "the API token is empty or spans several lines");
            free(token);
            return NULL;
        }
        ctx->client = cli_client_new(NULL, ctx->url, token);
        explicit_bzero(token, n);
        free(token);
        return ctx->client;
    }
    const char *sock = ctx->socket_opt;
    if (!sock || !*sock)
        sock = getenv("KVMHOST_SOCKET");
    if (!sock || !*sock)
        sock = KH_DEFAULT_SOCKET;
    ctx->client = cli_client_new(sock, NULL, NULL);
    return ctx->client;
}

int cli_show(cli_ctx *ctx, const char *method, const char *path, const json_t *body,
             void (*human)(const json_t *), kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    if (!c || cli_client_json(c, method, path, body, &resp, NULL, err) < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, resp);
    else
        human(resp);
    json_decref(resp);
    return 0;
}

int cli_delete(cli_ctx *ctx, char *path, const char *what, const char *name, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    int rc = c ? cli_client_json(c, "DELETE", path, NULL, &resp, NULL, err) : -1;
    free(path);
    json_decref(resp);
    if (rc < 0)
        return -1;
    if (!ctx->json)
        printf("%s %s deleted\n", what, name);
    return 0;
}

void cli_show_kv(const json_t *o)
{
    cli_kv *kv = cli_kv_new();
    cli_kv_add_json(kv, NULL, o, NULL);
    cli_print_free(cli_kv_render(kv));
    cli_kv_free(kv);
}

void cli_print_free(char *s)
{
    fputs(s, stdout);
    free(s);
}
