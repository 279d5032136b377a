#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/mem.h"

/* The runtime "hotplugged" of a VM's disks and NICs (vm_json). */
#define HOTPLUGGED_SCHEMA                                                                        \
    "{\"type\":\"boolean\",\"readOnly\":true,\"description\":\"only while QEMU runs: "       \
    "true when hot-plugged into it (can be unplugged live), false when there at start (409 on "   \
    "a live unplug); absent when the daemon does not know (a QEMU started by an older "          \
    "daemon)\"}"

static const kh_route routes[] = {
    { "GET", "/api/v1/host", kh_host_routes_get, 0, "Host facts: accelerator, QEMU, capacity",
      NULL, "Host" },
    { "GET", "/api/v1/openapi.json", kh_host_routes_openapi, 0, "This document", NULL, NULL },
    { "GET", "/api/v1/vms", kh_vm_routes_list, 0, "List VMs", NULL, "VMList" },
    { "POST", "/api/v1/vms", kh_vm_routes_create, 0,
      "Create a VM (a spec, or a clone: CloneSpec; a full clone answers 202 with a Task)",
      "VMSpec", "VM" },
    { "GET", "/api/v1/vms/{name}", kh_vm_routes_get, 0, "Show a VM", NULL, "VM" },
    { "PATCH", "/api/v1/vms/{name}", kh_vm_routes_patch, 0,
      "Change allow-listed fields of a VM", "VMPatch", "VM" },
    { "DELETE", "/api/v1/vms/{name}", kh_vm_routes_delete, 0, "Delete a stopped VM", NULL,
      NULL },
    { "POST", "/api/v1/vms/{name}/start", kh_vm_routes_start, 0, "Start a VM", "ActionOptions",
      "Task" },
    { "POST", "/api/v1/vms/{name}/stop", kh_vm_routes_stop, 0,
      "ACPI power-down, then kill after the timeout", "StopOptions", "Task" },
    { "POST", "/api/v1/vms/{name}/kill", kh_vm_routes_kill, 0, "Kill the VM's QEMU at once",
      "ActionOptions", "Task" },
    { "POST", "/api/v1/vms/{name}/reboot", kh_vm_routes_reboot, 0, "Reset the VM",
      "ActionOptions", "Task" },
    { "POST", "/api/v1/vms/{name}/pause", kh_vm_routes_pause, 0, "Pause the vCPUs",
      "ActionOptions", "Task" },
    { "POST", "/api/v1/vms/{name}/resume", kh_vm_routes_resume, 0, "Resume the vCPUs",
      "ActionOptions", "Task" },
    { "POST", "/api/v1/vms/{name}/template", kh_template_routes_make, 0,
      "Make a stopped VM a template: its volumes become read-only bases", NULL, "VM" },
    { "POST", "/api/v1/vms/{name}/disks", kh_disk_routes_attach, 0,
      "Attach a volume as a disk: edits a stopped VM, hot-plugs into a running q35 VM "
      "(virtio-blk on a free hot-plug port); the next start has it as an ordinary disk",
      "DiskAttach", "VM" },
    { "DELETE", "/api/v1/vms/{name}/disks/{index}", kh_disk_routes_detach, 0,
      "Detach disk {index} (0 is the first): edits a stopped VM, hot-unplugs a hot-plugged "
      "disk of a running VM (?timeout=SECONDS for the guest to release it, default 30; 504 "
      "and still attached when it does not)", NULL, "VM" },
    { "GET", "/api/v1/vms/{name}/snapshots", kh_snapshot_routes_list, 0,
      "List the VM's snapshots", NULL, "SnapshotList" },
    { "POST", "/api/v1/vms/{name}/snapshots", kh_snapshot_routes_create, 0,
      "Snapshot the VM: with its memory while it runs, disk-only when stopped (a task)",
      "SnapshotSpec", "Task" },
    { "GET", "/api/v1/vms/{name}/snapshots/{snap}", kh_snapshot_routes_get, 0,
      "One snapshot: memory, created_at, parent, current, children (the tree)", NULL,
      "Snapshot" },
    { "POST", "/api/v1/vms/{name}/snapshots/{snap}/revert", kh_snapshot_routes_revert, 0,
      "Revert to a snapshot: a running VM runs on from that instant (a task)",
      "ActionOptions", "Task" },
    { "DELETE", "/api/v1/vms/{name}/snapshots/{snap}", kh_snapshot_routes_delete, 0,
      "Delete one snapshot; the others keep their data (a task)", NULL, "Task" },
    { "POST", "/api/v1/vms/{name}/nics", kh_nic_routes_add, 0,
      "Add a NIC: hot-plugged into a running q35 VM, else added to the spec (a task; "
      "?wait=SECONDS, default 30)",
      "NIC", "Task" },
    { "DELETE", "/api/v1/vms/{name}/nics/{index}", kh_nic_routes_remove, 0,
      "Remove NIC {index}: hot-unplugged from a running VM (the guest must release it within "
      "?timeout=SECONDS, default 30), else taken out of the spec (a task; ?wait=SECONDS)",
      NULL, "Task" },
    { "PATCH", "/api/v1/vms/{name}/nics/{index}", kh_nic_routes_patch, 0,
      "Set NIC {index}'s link up or down, live on a running VM (a task; ?wait=SECONDS)",
      "NICPatch", "Task" },
    { "GET", "/api/v1/templates", kh_template_routes_list, 0, "List the templates", NULL,
      "TemplateList" },
    { "GET", "/api/v1/vms/{name}/console", kh_console_routes_ws, KH_ROUTE_WEBSOCKET,
      "Serial console (WebSocket, binary frames both ways)", NULL, NULL },
    { "GET", "/api/v1/vms/{name}/console/log", kh_console_routes_log, 0,
      "Serial output so far (text/plain, ?tail=BYTES)", NULL, NULL },
    { "GET", "/api/v1/vms/{name}/vnc", kh_vnc_routes_ws, KH_ROUTE_WEBSOCKET,
      "Graphical console: the VM's VNC (RFB) stream as a WebSocket, binary frames both ways "
      "(VMs with graphics \"vnc\")",
      NULL, NULL },
    { "GET", "/api/v1/pools", kh_storage_routes_pools, 0, "List storage pools", NULL,
      "PoolList" },
    { "POST", "/api/v1/pools", kh_storage_routes_pool_create, 0,
      "Add a dir pool at an existing directory", "PoolSpec", "Pool" },
    { "GET", "/api/v1/pools/{pool}", kh_storage_routes_pool_get, 0,
      "Show a pool: capacity, allocation, free space", NULL, "Pool" },
    { "DELETE", "/api/v1/pools/{pool}", kh_storage_routes_pool_delete, 0,
      "Forget an empty pool (its directory stays)", NULL, NULL },
    { "GET", "/api/v1/pools/{pool}/volumes", kh_storage_routes_volumes, 0,
      "List the volumes of a pool", NULL, "VolumeList" },
    { "POST", "/api/v1/pools/{pool}/volumes", kh_storage_routes_volume_create, 0,
      "Create a volume (empty, a linked clone of a backing volume, or an import)",
      "VolumeSpec", "Volume" },
    { "GET", "/api/v1/pools/{pool}/volumes/{volume}", kh_storage_routes_volume_get, 0,
      "Show a volume with its backing chain (qemu-img info)", NULL, "Volume" },
    { "POST", "/api/v1/pools/{pool}/volumes/{volume}/resize", kh_storage_routes_volume_resize,
      0, "Grow a volume (online through QMP block_resize while a VM runs on it)", "VolumeResize", "Volume" },
    { "PUT", "/api/v1/pools/{pool}/volumes/{volume}/data", kh_storage_routes_volume_upload,
      KH_ROUTE_RAW | KH_ROUTE_STREAM,
      "Upload a new volume: the body is the image (?format=qcow2|raw, required: checked with "
      "qemu-img, never guessed), streamed to disk with the pool's free space as the byte cap "
      "(413); an image with a backing or data file, encrypted, or of another format is 400; "
      "201 with the Volume; any failure leaves nothing", NULL, "Volume" },
    { "GET", "/api/v1/pools/{pool}/volumes/{volume}/data", kh_storage_routes_volume_download, 0,
      "Download a volume's image file (application/octet-stream, streamed); 409 while a "
      "running VM writes to it", NULL, NULL },
    { "DELETE", "/api/v1/pools/{pool}/volumes/{volume}", kh_storage_routes_volume_delete, 0,
      "Delete a volume no VM and no other volume depends on", NULL, NULL },
    { "GET", "/api/v1/networks", kh_net_routes_list, 0, "List networks", NULL, "NetworkList" },
    { "POST", "/api/v1/networks", kh_net_routes_create, 0,
      "Create a network (nat, isolated or bridged)", "NetworkSpec", "Network" },
    { "GET", "/api/v1/networks/{name}", kh_net_routes_get, 0, "Show a network", NULL,
      "Network" },
    { "DELETE", "/api/v1/networks/{name}", kh_net_routes_delete, 0,
      "Delete a network no VM uses (409 while one does)", NULL, NULL },
    { "GET", "/api/v1/networks/{name}/leases", kh_net_routes_leases, 0,
      "DHCP leases of a network (dnsmasq's lease file)", NULL, "LeaseList" },
    { "POST", "/api/v1/networks/{name}/forwards", kh_net_routes_forward_add, 0,
      "Forward a host port to a VM on a nat network", "Forward", "Network" },
    { "DELETE", "/api/v1/networks/{name}/forwards/{proto}/{port}", kh_net_routes_forward_delete,
      0, "Remove a port forward", NULL, NULL },
    { "GET", "/api/v1/security-groups", kh_net_routes_sg_list, 0, "List security groups", NULL,
      NULL },
    { "GET", "/api/v1/security-groups/{name}", kh_net_routes_sg_get, 0, "Show a security group",
      NULL, "SecurityGroup" },
    { "PUT", "/api/v1/security-groups/{name}", kh_net_routes_sg_put, 0,
      "Create or replace a security group (inbound rules for the NICs that name it)",
      "SecurityGroup", "SecurityGroup" },
    { "DELETE", "/api/v1/security-groups/{name}", kh_net_routes_sg_delete, 0,
      "Delete a security group no NIC uses", NULL, NULL },
    { "POST", "/api/v1/security-groups/{name}/rules", kh_net_routes_sg_rule_add, 0,
      "Append one rule to a security group (atomic: concurrent adds are all kept)",
      "SecurityGroupRule", "SecurityGroup" },
    { "DELETE", "/api/v1/security-groups/{name}/rules/{index}", kh_net_routes_sg_rule_delete, 0,
      "Delete rule {index} (0 is the first); the rules after it move up one", NULL,
      "SecurityGroup" },
    { "GET", "/api/v1/tasks", kh_task_routes_list, 0, "Recent tasks", NULL, "TaskList" },
    { "GET", "/api/v1/tasks/{id}", kh_task_routes_get, 0, "Show a task", NULL, "Task" },
    { "GET", "/api/v1/events", kh_event_routes_stream, KH_ROUTE_SSE,
      "Event stream (Server-Sent Events; ?since=ID or Last-Event-ID)", NULL, NULL },
    { "GET", "/metrics", kh_metrics_routes_prometheus, KH_ROUTE_LOOPBACK_PUBLIC,
      "Prometheus metrics (text format 0.0.4); token on TCP unless --metrics-public and "
      "the client is on loopback", NULL, NULL },
    { "GET", "/api/v1/host/metrics", kh_metrics_routes_host, 0,
      "Host history (?range=SECONDS, up to 3600) and the latest sample of every VM", NULL,
      "History" },
    { "GET", "/api/v1/vms/{name}/metrics", kh_metrics_routes_vm, 0,
      "A VM's history (?range=SECONDS, up to 3600)", NULL, "History" },
    { "POST", "/api/v1/session", kh_session_routes_post, KH_ROUTE_PUBLIC,
      "Browser login: the API token for a session cookie and a CSRF token", "SessionLogin",
      "Session" },
    { "GET", "/api/v1/session", kh_session_routes_get, KH_ROUTE_PUBLIC,
      "Whether and how this request is authenticated", NULL, "Session" },
    { "DELETE", "/api/v1/session", kh_session_routes_delete, 0, "Log out (end the session)", NULL,
      NULL },
    { "GET", "/api/v1/alerts", kh_metrics_routes_alerts, 0,
      "Alert rules and the alerts pending or firing now", NULL, NULL },
    { "PUT", "/api/v1/alerts/rules", kh_metrics_routes_alert_rules, 0,
      "Replace the alert rules and the webhook (body {\"rules\": [...], \"webhook\": {\"url\", "
      "\"timeout_seconds\"} | null}; until the daemon restarts)", NULL,
      NULL },
};

const kh_route *kh_routes_table(size_t *n)
{
    *n = KH_ARRAY_LEN(routes);
    return routes;
}

/* JSON Schema of the API objects, the source of components/schemas: one
 * entry per schema (ISO C caps a string literal at 4095 bytes). */
static const struct {
    const char *name;
    const char *json;
} schemas[] = {
    { "Error",
      "{\"type\":\"object\",\"required\":[\"error\"],\"properties\":{\"error\":{\"type\":\"object\",\"required\":"
      "[\"code\",\"message\"],\"properties\":{\"code\":{\"type\":\"string\",\"enum\":[\"invalid\",\"unauthorized"
      "\",\"forbidden\",\"not_found\",\"method_not_allowed\",\"conflict\",\"too_large\",\"unsupported\",\"bus"
      "y\",\"internal\",\"qemu\",\"unavailable\",\"timeout\"]},\"message\":{\"type\":\"string\"},\"task\":{\"type"
      "\":\"string\"}}}}}" },
    { "Boot",
      "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"kernel\":{\"type\":\"string\",\"d"
      "escription\":\"absolute path\"},\"initrd\":{\"type\":\"string\"},\"cmdline\":{\"type\":\"string\",\"maxL"
      "ength\":4096}}}" },
    { "Disk",
      "{\"type\":\"object\",\"additionalProperties\":false,\"description\":\"a host file (path and "
      "format) or a volume (pool/name)\",\"properties\":"
      "{\"path\":{\"type\":\"string\"},\"format\":{\"type\":\"string\",\"enum\":[\"raw\",\"qcow2\"]},\"volume\":{"
      "\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*$\"},\"readonly\":{"
      "\"type\":\"boolean\",\"default\":false},\"hotplugged\":" HOTPLUGGED_SCHEMA "},\"oneOf\":[{\"required\":[\"path\",\"format\"]},{\"required\":"
      "[\"volume\"]}]}" },
    { "VMSpec",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\"],\""
      "properties\":{\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},\"vc"
      "pus\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":255},"
      "\"max_vcpus\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":255,\"description\":\"q35: vCPU "
      "hot-plug up to this; absent = vcpus\"},\"hugepages\":{\"type\":\"boolean\",\"default\":false,"
      "\"description\":\"guest RAM from 2 MiB huge pages (memory_mib even)\"},\"memory_mib\":{\"type\":\"integer\",\"minimu"
      "m\":16,\"maximum\":16777216},\"machine\":{\"type\":\"string\",\"enum\":[\"q35\",\"microvm\"],\"default\":"
      "\"q35\"},\"boot\":{\"$ref\":\"#/components/schemas/Boot\"},\"disks\":{\"type\":\"array\",\"maxItems\":16"
      ",\"items\":{\"$ref\":\"#/components/schemas/Disk\"}},\"serial\":{\"type\":\"boolean\",\"default\":true"
      "},\"graphics\":{\"type\":\"string\",\"enum\":[\"none\",\"vnc\"],\"default\":\"none\"},\"description\":{\"ty"
      "pe\":\"string\",\"maxLength\":1024},\"nics\":{\"type\":\"array\",\"maxItems\":8,\"items\":{\"$ref\":\"#/co"
      "mponents/schemas/NIC\"}},\"limits\":{\"$ref\":\"#/components/schemas/Limits\"}}}" },
    { "DiskAttach",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"volume\"],\"propert"
      "ies\":{\"volume\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za"
      "-z0-9_][A-Za-z0-9_.-]*$\"},\"readonly\":{\"type\":\"boolean\",\"default\":false}}}" },
    { "VMPatch",
      "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"vcpus\":{\"type\":\"integer\","
      "\"description\":\"alone on a running q35 VM: hot-plug or unplug, up to max_vcpus\"},"
      "\"max_vcpus\":{\"type\":\"integer\"},\"hugepages\":{\"type\":\"boolean\"},\"memory_mib\":{\"type\":\"integer\"},\"machine\":{\"type\":\"string\"},\"boot\":{\"$ref\":\"#/components/"
      "schemas/Boot\"},\"disks\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Disk\"}},\"se"
      "rial\":{\"type\":\"boolean\"},\"graphics\":{\"type\":\"string\"},\"description\":{\"type\":\"string\"},"
      "\"limits\":{\"$ref\":\"#/components/schemas/Limits\"},"
      "\"nics\":{\"type\":\"array\",\"maxItems\":8,\"items\":{\"$ref\":\"#/components/schemas/NIC\"}}}}" },
    { "Limits",
      "{\"type\":\"object\",\"additionalProperties\":false,\"description\":\"Changeable on a running VM; "
      "PATCH merges key by key, null removes one\",\"properties\":{\"cpu_weight\":{\"type\":\"integer\",\"m"
      "inimum\":1,\"maximum\":10000},\"cpu_max_percent\":{\"type\":\"integer\",\"minimum\":1,\"descr"
      "iption\":\"percent of one host CPU, at most 100 per vCPU\"},\"cpu_affinity\":{\"type\":\"array\",\"i"
      "tems\":{\"type\":\"integer\",\"minimum\":0},\"description\":\"host CPUs the vCPU threads run on\"},"
      "\"balloon_mib\":{\"type\":\"integer\",\"description\":\"balloon target, at most memory_mib (q35)\"},"
      "\"memory_max_mib\":{\"type\":\"intege"
      "r\",\"description\":\"at least memory_mib\"},\"emulator_cpus\":{\"type\":\"array\",\"items"
      "\":{\"type\":\"integer\",\"minimum\":0},\"description\":\"host CPUs QEMU's other threads run on\"}"
      ",\"iothread_cpus\":{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":0},\"desc"
      "ription\":\"host CPUs the disks' iothreads run on\"},\"numa_nodes\":{\"type\":\"array\",\"items"
      "\":{\"type\":\"integer\",\"minimum\":0},\"description\":\"host NUMA nodes for guest memory (cpu"
      "set.mems)\"},\"disk\":{\"type\":\"array\",\"items\":{\"type\":\"o"
      "bject\",\"required\":[\"index\"],\"properties\":{\"index\":{\"type\":\"integer\"},\"iops_total\":"
      "{\"type\":\"integer\"},\"iops_read\":{\"type\":\"integer\"},\"iops_write\":{\"type\":\"integer\"}"
      ",\"bps_total\":{\"type\":\"integer\"},\"bps_read\":{\"type\":\"integer\"},\"bps_write\":{\"type\""
      ":\"integer\"},\"iops_total_max\":{\"type\":\"integer\"},\"iops_read_max\":{\"type\":\"integer\"},\""
      "iops_write_max\":{\"type\":\"integer\"},\"bps_total_max\":{\"type\":\"integer\"},\"bps_read_max\":{"
      "\"type\":\"integer\"},\"bps_write_max\":{\"type\":\"integer\"}}}}}}" },
    { "History",
      "{\"type\":\"object\",\"properties\":{\"interval_seconds\":{\"type\":\"number\"},\"fields\":{\"t"
      "ype\":\"array\",\"items\":{\"type\":\"string\"}},\"samples\":{\"type\":\"array\",\"items\":{\"ty"
      "pe\":\"array\",\"items\":{\"type\":\"number\"}}},\"vms\":{\"type\":\"object\"}}}" },
    { "VM",
      "{\"allOf\":[{\"$ref\":\"#/components/schemas/VMSpec\"},{\"type\":\"object\",\"properties\":{\"id\":{\"t"
      "ype\":\"string\",\"format\":\"uuid\"},\"state\":{\"type\":\"string\",\"enum\":[\"stopped\",\"starting\",\"ru"
      "nning\",\"paused\",\"stopping\"]},\"state_reason\":{\"type\":\"string\",\"nullable\":true},\"pid\":{\"ty"
      "pe\":\"integer\",\"nullable\":true},\"accelerator\":{\"type\":\"string\",\"enum\":[\"kvm\",\"tcg\"],\"null"
      "able\":true},\"console_viewers\":{\"type\":\"integer\"},\"created_at\":{\"type\":\"string\",\"format\":"
      "\"date-time\"},\"updated_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"started_at\":{\"type\":\"s"
      "tring\",\"format\":\"date-time\",\"nullable\":true}}}]}" },
    { "NetworkSpec",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\"],\"properties\""
      ":{\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},\"type"
      "\":{\"type\":\"string\",\"enum\":[\"nat\",\"isolated\",\"bridged\"],\"default\":\"nat\"},\""
      "subnet\":{\"type\":\"string\",\"description\":\"IPv4 network (nat, isolated), e.g. 10.10.0"
      ".0/24; the gateway is its first address. Picked when absent.\"},\"bridge\":{\"type\":\"str"
      "ing\",\"maxLength\":15,\"description\":\"bridged: the existing host bridge\"}}}" },
    { "Network",
      "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"name\":{\"type\":\"str"
      "ing\"},\"type\":{\"type\":\"string\"},\"subnet\":{\"type\":\"string\"},\"bridge\":{\"type\""
      ":\"string\"},\"gateway\":{\"type\":\"string\"},\"dhcp\":{\"type\":\"object\"},\"forwards\""
      ":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Forward\"}},\"nics\":{\"ty"
      "pe\":\"array\",\"items\":{\"type\":\"object\"}},\"dnsmasq_pid\":{\"type\":\"integer\"}}}" },
    { "NetworkList",
      "{\"type\":\"object\",\"properties\":{\"networks\":{\"type\":\"array\",\"items\":{\"$ref\":"
      "\"#/components/schemas/Network\"}}}}" },
    { "Forward",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"host_port\",\"vm\",\"v"
      "m_port\"],\"properties\":{\"proto\":{\"type\":\"string\",\"enum\":[\"tcp\",\"udp\"],\"defa"
      "ult\":\"tcp\"},\"host_port\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":65535},\"vm\""
      ":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},\"vm_port\":{\"t"
      "ype\":\"integer\",\"minimum\":1,\"maximum\":65535},\"ip\":{\"type\":\"string\",\"readOnly\""
      ":true}}}" },
    { "LeaseList",
      "{\"type\":\"object\",\"properties\":{\"leases\":{\"type\":\"array\",\"items\":{\"type\":\""
      "object\",\"properties\":{\"expires\":{\"type\":\"integer\"},\"mac\":{\"type\":\"string\"},"
      "\"ip\":{\"type\":\"string\"},\"hostname\":{\"type\":\"string\"},\"vm\":{\"type\":\"string\""
      "}}}}}}" },
    { "NIC",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"network\"],\"propertie"
      "s\":{\"network\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},"
      "\"mac\":{\"type\":\"string\",\"pattern\":\"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$\"},\"ip\":"
      "{\"type\":\"string\"},\"security_groups\":{\"type\":\"array\",\"maxItems\":8,\"items\":{"
      "\"type\":\"string\"}},\"link\":{\"type\":\"string\",\"enum\":[\"up\",\"down\"],"
      "\"default\":\"up\"},\"hotplugged\":" HOTPLUGGED_SCHEMA "}}" },
    { "NICPatch",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"link\"],"
      "\"properties\":{\"link\":{\"type\":\"string\",\"enum\":[\"up\",\"down\"]}}}" },
    { "SecurityGroup",
      "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"name\":{\"type\":\"s"
      "tring\"},\"rules\":{\"type\":\"array\",\"maxItems\":64,\"items\":{\"$ref\":\"#/compone"
      "nts/schemas/SecurityGroupRule\"}}}}" },
    { "SecurityGroupRule",
      "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"direction\":{\"type"
      "\":\"string\",\"enum\":[\"in\"]},\"proto\":{\"type\":\"string\",\"enum\":[\"tcp\",\"udp\","
      "\"icmp\",\"any\"],\"default\":\"tcp\"},\"ports\":{\"type\":\"string\",\"description\":\"80 "
      "or 8000-8080\"},\"cidr\":{\"type\":\"string\",\"description\":\"source network: IPv4 "
      "(10.0.0.0/8, IPv4 only) or IPv6 (2001:db8::/32, IPv6 only); absent = anywhere, both "
      "families\"}}}" },
    { "VMList",
      "{\"type\":\"object\",\"properties\":{\"vms\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schem"
      "as/VM\"}}}}" },
    { "ActionOptions",
      "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"wait\":{\"type\":\"integer\",\"mi"
      "nimum\":0,\"maximum\":3600,\"default\":30,\"description\":\"seconds to wait for the task before "
      "answering 202\"}}}" },
    { "StopOptions",
      "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"wait\":{\"type\":\"integer\",\"mi"
      "nimum\":0,\"maximum\":3600},\"timeout\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":3600,\"default"
      "\":60,\"description\":\"seconds of grace before QEMU is killed; 0 kills at once\"}}}" },
    { "Task",
      "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"kind\":{\"type\":\"string\"},\"vm\":{\"ty"
      "pe\":\"string\"},\"state\":{\"type\":\"string\",\"enum\":[\"running\",\"succeeded\",\"failed\"]},\"progres"
      "s\":{\"type\":\"integer\"},\"message\":{\"type\":\"string\",\"nullable\":true},\"error\":{\"type\":\"objec"
      "t\",\"nullable\":true},\"result\":{\"nullable\":true},\"created_at\":{\"type\":\"string\"},\"finished_"
      "at\":{\"type\":\"string\",\"nullable\":true}}}" },
    { "TaskList",
      "{\"type\":\"object\",\"properties\":{\"tasks\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/sch"
      "emas/Task\"}}}}" },
    { "SnapshotSpec",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\"],\"properties\":{"
      "\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},\"wait\":{"
      "\"type\":\"integer\",\"minimum\":0,\"maximum\":3600,\"default\":30}}}" },
    { "Snapshot",
      "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"memory\":{\"type"
      "\":\"boolean\"},\"created_at\":{\"type\":\"string\"},\"parent\":{\"type\":\"string\",\"n"
      "ullable\":true,\"description\":\"the snapshot the VM was at when this one was taken\"},"
      "\"current\":{\"type\":\"boolean\",\"description\":\"the VM is at this snapshot (taken "
      "or reverted to last)\"},\"children\":{\"type\":\"array\",\"items\":{\"type\":\"str"
      "ing\"}}}}" },
    { "SnapshotList",
      "{\"type\":\"object\",\"properties\":{\"current\":{\"type\":\"string\",\"nullable\":"
      "true},\"snapshots\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/S"
      "napshot\"}}}}" },
    { "CloneSpec",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\",\"from_template\"],"
      "\"properties\":{\"name\":{\"type\":\"string\"},\"from_template\":{\"type\":\"string\"},\"clone\":{"
      "\"type\":\"string\",\"enum\":[\"linked\",\"full\"],\"default\":\"linked\"},\"vcpus\":{\"type\":"
      "\"integer\"},\"memory_mib\":{\"type\":\"integer\"},\"description\":{\"type\":\"string\"}}}" },
    { "TemplateList",
      "{\"type\":\"object\",\"properties\":{\"templates\":{\"type\":\"array\",\"items\":{\"$ref\":"
      "\"#/components/schemas/VM\"}}}}" },
    { "PoolSpec",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\",\"path\"],\"properties\":{"
      "\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},\"type\":{\"type\":"
      "\"string\",\"enum\":[\"dir\"],\"default\":\"dir\"},\"path\":{\"type\":\"string\",\"description\":"
      "\"an existing directory (absolute)\"}}}" },
    { "Pool",
      "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"name\":{\"type\":\"string\"},"
      "\"type\":{\"type\":\"string\"},\"path\":{\"type\":\"string\"},\"default\":{\"type\":\"boolean\"},"
      "\"capacity\":{\"type\":\"integer\"},\"allocation\":{\"type\":\"integer\"},\"free\":{\"type\":"
      "\"integer\"},\"available\":{\"type\":\"boolean\"},\"volumes\":{\"type\":\"integer\"},"
      "\"created_at\":{\"type\":\"string\"}}}" },
    { "PoolList",
      "{\"type\":\"object\",\"properties\":{\"pools\":{\"type\":\"array\",\"items\":{\"$ref\":"
      "\"#/components/schemas/Pool\"}}}}" },
    { "VolumeSpec",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\"],\"properties\":{"
      "\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},\"format\":{"
      "\"type\":\"string\",\"enum\":[\"qcow2\",\"raw\"],\"default\":\"qcow2\"},\"size\":{\"oneOf\":[{"
      "\"type\":\"integer\",\"minimum\":1},{\"type\":\"string\",\"pattern\":"
      "\"^[0-9]+([KMGTPkmgtp]i?)?[Bb]?$\"}],\"description\":\"bytes, or with a unit (powers of 1024); "
      "at most 64 TiB and the pool's free space\"},\"preallocate\":{\"type\":\"boolean\",\"default\":"
      "false},\"backing\":{\"type\":\"string\",\"description\":\"[pool/]volume: create a qcow2 "
      "overlay on it (a linked clone)\"},\"import\":{\"type\":\"string\",\"description\":\"a host "
      "image to copy, of the given format; images with a backing or data file are refused\"}}}" },
    { "VolumeResize",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"size\"],\"properties\":{"
      "\"size\":{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"string\"}],\"description\":\"the new "
      "size, not smaller than the current one\"}}}" },
    { "Volume",
      "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"name\":{\"type\":\"string\"},"
      "\"pool\":{\"type\":\"string\"},\"ref\":{\"type\":\"string\",\"description\":\"pool/name, as "
      "used in a VM's disks\"},\"format\":{\"type\":\"string\"},\"capacity\":{\"type\":\"integer\"},"
      "\"allocation\":{\"type\":\"integer\"},\"virtual_size\":{\"type\":\"integer\"},\"actual_size\":{"
      "\"type\":\"integer\"},\"readonly\":{\"type\":\"boolean\"},\"backing\":{\"type\":\"string\","
      "\"nullable\":true},\"backing_chain\":{\"type\":\"array\"},\"dependents\":{\"type\":\"integer\"},"
      "\"used_by\":{\"type\":\"array\"},\"created_at\":{\"type\":\"string\"}}}" },
    { "VolumeList",
      "{\"type\":\"object\",\"properties\":{\"volumes\":{\"type\":\"array\",\"items\":{\"$ref\":"
      "\"#/components/schemas/Volume\"}}}}" },
    { "SessionLogin",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"token\"],\"properties\":{\"t"
      "oken\":{\"type\":\"string\",\"description\":\"the API token (STATE_DIR/api-token)\"}}}" },
    { "Session",
      "{\"type\":\"object\",\"properties\":{\"authenticated\":{\"type\":\"boolean\"},\"via\":{\"ty"
      "pe\":\"string\"},\"csrf_token\":{\"type\":\"string\",\"description\":\"send as X-CSRF-Token on "
      "writes made with the session cookie\"}}}" },
    { "Host",
      "{\"type\":\"object\",\"properties\":{\"hostname\":{\"type\":\"string\"},\"version\":{\"type\":\"string\"},"
      "\"accelerator\":{\"type\":\"string\",\"enum\":[\"kvm\",\"tcg\"]},\"accelerator_reason\":{\"type\":\"strin"
      "g\"},\"qemu\":{\"type\":\"object\"},\"cpus\":{\"type\":\"integer\"},\"memory_mib\":{\"type\":\"integer\"},"
      "\"memory_free_mib\":{\"type\":\"integer\",\"description\":\"MemFree\"},"
      "\"memory_available_mib\":{\"type\":\"integer\",\"description\":\"MemAvailable: free plus "
      "reclaimable cache; the dashboard's used = memory_mib - this\"},\""
      "cgroup\":{\"type\":\"string\"},\"cgroup_missing\":{\"type\":\"array\",\"items\":{\"type\":"
      "\"string\"},\"description\":\"cgroup controllers kvmhost uses that this host lacks; limits "
      "needing them are refused\"},\"cgroup_mounted_private\":{\"type\":\"boolean\",\"description\":"
      "\"the hierarchies were not visible (e.g. under ip netns exec) and were mounted in the "
      "daemon's own mount namespace\"},\"vms\":{\"type\":\"object\"},\"uptime_seconds\":{\"type\":\"number\"}}}" },
};

json_t *kh_routes_schemas(void)
{
    json_t *all = json_object();
    for (size_t i = 0; i < KH_ARRAY_LEN(schemas); i++) {
        json_error_t jerr;
        json_t *j = json_loads(schemas[i].json, 0, &jerr);
        if (!j) {
            /* A bug in the literals above: fail loudly in every build. */
            fprintf(stderr, "kvmhost: schema %s: %s at %d\n", schemas[i].name, jerr.text,
                    jerr.position);
            abort();
        }
        json_object_set_new(all, schemas[i].name, j);
    }
    return all;
}
