#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/mem.h"

static const kh_route routes[] = {
    { "GET", "/api/v1/host", kh_host_routes_get, 0, "Host facts: accelerator, QEMU, capacity",
      NULL, "Host" },
    { "GET", "/api/v1/openapi.json", kh_host_routes_openapi, 0, "This document", NULL, NULL },
    { "GET", "/api/v1/vms", kh_vm_routes_list, 0, "List VMs", NULL, "VMList" },
    { "POST", "/api/v1/vms", kh_vm_routes_create, 0, "Create a VM", "VMSpec", "VM" },
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
    { "GET", "/api/v1/vms/{name}/console", kh_console_routes_ws, KH_ROUTE_WEBSOCKET,
      "Serial console (WebSocket, binary frames both ways)", NULL, NULL },
    { "GET", "/api/v1/vms/{name}/console/log", kh_console_routes_log, 0,
      "Serial output so far (text/plain, ?tail=BYTES)", NULL, NULL },
    { "GET", "/api/v1/vms/{name}/vnc", kh_vnc_routes_ws, KH_ROUTE_WEBSOCKET,
      "Graphical console: the VM's VNC (RFB) stream as a WebSocket, binary frames both ways "
      "(VMs with graphics \"vnc\")",
      NULL, NULL },
    { "GET", "/api/v1/tasks", kh_task_routes_list, 0, "Recent tasks", NULL, "TaskList" },
    { "GET", "/api/v1/tasks/{id}", kh_task_routes_get, 0, "Show a task", NULL, "Task" },
    { "GET", "/api/v1/events", kh_event_routes_stream, KH_ROUTE_SSE,
      "Event stream (Server-Sent Events; ?since=ID or Last-Event-ID)", NULL, NULL },
    { "POST", "/api/v1/session", kh_http_session_post, KH_ROUTE_PUBLIC,
      "Browser login: the API token for a session cookie and a CSRF token", "SessionLogin",
      "Session" },
    { "GET", "/api/v1/session", kh_http_session_get, KH_ROUTE_PUBLIC,
      "Whether and how this request is authenticated", NULL, "Session" },
    { "DELETE", "/api/v1/session", kh_http_session_delete, 0, "Log out (end the session)", NULL,
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
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"path\",\"format\"],\"properties\":"
      "{\"path\":{\"type\":\"string\"},\"format\":{\"type\":\"string\",\"enum\":[\"raw\",\"qcow2\"]},\"readonly\":{"
      "\"type\":\"boolean\",\"default\":false}}}" },
    { "VMSpec",
      "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\"],\""
      "properties\":{\"name\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$\"},\"vc"
      "pus\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":255},\"memory_mib\":{\"type\":\"integer\",\"minimu"
      "m\":16,\"maximum\":16777216},\"machine\":{\"type\":\"string\",\"enum\":[\"q35\",\"microvm\"],\"default\":"
      "\"q35\"},\"boot\":{\"$ref\":\"#/components/schemas/Boot\"},\"disks\":{\"type\":\"array\",\"maxItems\":16"
      ",\"items\":{\"$ref\":\"#/components/schemas/Disk\"}},\"serial\":{\"type\":\"boolean\",\"default\":true"
      "},\"graphics\":{\"type\":\"string\",\"enum\":[\"none\",\"vnc\"],\"default\":\"none\"},\"description\":{\"ty"
      "pe\":\"string\",\"maxLength\":1024}}}" },
    { "VMPatch",
      "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"vcpus\":{\"type\":\"integer\"},\""
      "memory_mib\":{\"type\":\"integer\"},\"machine\":{\"type\":\"string\"},\"boot\":{\"$ref\":\"#/components/"
      "schemas/Boot\"},\"disks\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Disk\"}},\"se"
      "rial\":{\"type\":\"boolean\"},\"graphics\":{\"type\":\"string\"},\"description\":{\"type\":\"string\"}}}" },
    { "VM",
      "{\"allOf\":[{\"$ref\":\"#/components/schemas/VMSpec\"},{\"type\":\"object\",\"properties\":{\"id\":{\"t"
      "ype\":\"string\",\"format\":\"uuid\"},\"state\":{\"type\":\"string\",\"enum\":[\"stopped\",\"starting\",\"ru"
      "nning\",\"paused\",\"stopping\"]},\"state_reason\":{\"type\":\"string\",\"nullable\":true},\"pid\":{\"ty"
      "pe\":\"integer\",\"nullable\":true},\"accelerator\":{\"type\":\"string\",\"enum\":[\"kvm\",\"tcg\"],\"null"
      "able\":true},\"console_viewers\":{\"type\":\"integer\"},\"created_at\":{\"type\":\"string\",\"format\":"
      "\"date-time\"},\"updated_at\":{\"type\":\"string\",\"format\":\"date-time\"},\"started_at\":{\"type\":\"s"
      "tring\",\"format\":\"date-time\",\"nullable\":true}}}]}" },
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
      "g\"},\"qemu\":{\"type\":\"object\"},\"cpus\":{\"type\":\"integer\"},\"memory_mib\":{\"type\":\"integer\"},\""
      "cgroup\":{\"type\":\"string\"},\"vms\":{\"type\":\"object\"},\"uptime_seconds\":{\"type\":\"number\"}}}" },
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
