/* routes.c - the REST route table: method, path, handler, flags, summary and
 * the names of the request and reply schemas (files in src/schema). */
#include "api/api.h"

#include "schema/schema.h"
#include "util/mem.h"

static const kh_route routes[] = {
    { "GET", "/api/v1/host", kh_host_routes_get, 0, "Host facts: accelerator, QEMU, capacity",
      NULL, "Host" },
    { "GET", "/api/v1/openapi.json", kh_host_routes_openapi, 0, "This document", NULL, NULL },
    { "GET", "/api/v1/vms", kh_vm_routes_list, 0, "List VMs", NULL, "VMList" },
    { "POST", "/api/v1/vms", kh_vm_routes_create, 0,
      "Create a VM (a spec, or a clone: CloneSpec; a full clone answers 202 with a Task)",
      "VMCreate", "VM" },
    { "GET", "/api/v1/vms/{name}", kh_vm_routes_get, 0, "Show a VM", NULL, "VM" },
    { "PATCH", "/api/v1/vms/{name}", kh_vm_routes_patch, 0,
      "Change allow-listed fields of a VM", "VMPatch", "VM" },
    { "DELETE", "/api/v1/vms/{name}", kh_vm_routes_delete, 0,
      "Delete a stopped VM; ?volumes=true: also the pool volumes its disks refer to (409, and "
      "nothing deleted, when another VM uses one or clones are based on one)", NULL,
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
      "Make a stopped VM a template: its volumes become read-only bases; reset_identity: "
      "first empty machine-id and remove the SSH host keys in them", "TemplateOptions", "VM" },
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
      "SecurityGroupList" },
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
      "\"timeout_seconds\"} | null}; until the daemon restarts)", "AlertConfig",
      NULL },
};

const kh_route *kh_routes_table(size_t *n)
{
    *n = KH_ARRAY_LEN(routes);
    return routes;
}

/* components/schemas of the OpenAPI document: the files in src/schema, which
 * the routes above name (src/schema/NAME.json). */
json_t *kh_routes_schemas(void)
{
    return kh_schema_all();
}
