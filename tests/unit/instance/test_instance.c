/* The VM state machine, driven in-process against a real QEMU (TCG, q35,
 * an empty disk: the firmware finds nothing to boot and idles, which is all
 * the lifecycle needs). Skipped (77) when no QEMU binary is installed. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../kh_test.h"
#include "qemu/caps.h"
#include "util/fs.h"
#include "util/mem.h"
#include "util/misc.h"
#include "instance/config.h"
#include "instance/lifecycle.h"
#include "instance/manager.h"

static uv_loop_t *loop;
static kh_store *store;
static kh_events *events;
static kh_tasks *tasks;
static kh_manager *mgr;
static kh_manager_config cfg;
static kh_cgroups no_cgroups;
static char dir[] = "/tmp/kh-vm-XXXXXX";
static char *disk;
static unsigned state_events;

static void count_state(const kh_event *ev, void *opaque)
{
    (void)opaque;
    if (strcmp(ev->type, "vm.state") == 0)
        state_events++;
}

static void done_cb(kh_task *t, void *opaque)
{
    (void)t;
    *(int *)opaque = 1;
}

/* Run the loop until the task finishes (or 20 s pass); its final state. */
static kh_task_state wait_task(kh_task *task)
{
    if (kh_task_get_state(task) == KH_TASK_FAILED)
        printf("# task failed: %s\n", kh_task_error(task)->msg);
    if (kh_task_get_state(task) != KH_TASK_RUNNING)
        return kh_task_get_state(task);
    int done = 0;
    kh_task_wait(task, done_cb, &done);
    uint64_t deadline = kh_now_ms() + 20000;
    while (!done && kh_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    if (kh_task_get_state(task) == KH_TASK_FAILED)
        printf("# task failed: %s\n", kh_task_error(task)->msg);
    return kh_task_get_state(task);
}

static const char *state_of(const char *name)
{
    static char buf[32];
    kh_err err = KH_ERR_INIT;
    json_t *j = kh_manager_vm_json(mgr, name, &err);
    snprintf(buf, sizeof(buf), "%s", j ? json_string_value(json_object_get(j, "state")) : "?");
    json_decref(j);
    return buf;
}

static bool reason_has(const char *name, const char *needle)
{
    kh_err err = KH_ERR_INIT;
    json_t *j = kh_manager_vm_json(mgr, name, &err);
    const char *r = j ? json_string_value(json_object_get(j, "state_reason")) : NULL;
    bool has = r && strstr(r, needle);
    json_decref(j);
    return has;
}

static json_t *spec(const char *name)
{
    return json_pack("{s:s, s:i, s:i, s:[{s:s, s:s}]}", "name", name, "vcpus", 1, "memory_mib",
                     64, "disks", "path", disk, "format", "raw");
}

static void manager_open(void)
{
    kh_err err = KH_ERR_INIT;
    mgr = kh_manager_new(loop, store, events, tasks, &cfg, &err);
    CHECK(mgr != NULL);
}

static void test_lifecycle(void)
{
    kh_err err = KH_ERR_INIT;
    json_t *s = spec("t1");
    json_t *vm = kh_config_create(mgr, s, &err);
    CHECK(vm != NULL);
    json_decref(vm);
    vm = kh_config_create(mgr, s, &err);
    CHECK(vm == NULL && err.code == KH_E_CONFLICT);
    kh_err_clear(&err);
    json_decref(s);

    /* Actions the state forbids change nothing. */
    CHECK(kh_lifecycle_action(mgr, "t1", KH_ACTION_PAUSE, NULL, &err) == NULL);
    CHECK(err.code == KH_E_CONFLICT);
    kh_err_clear(&err);
    CHECK(kh_lifecycle_action(mgr, "nope", KH_ACTION_START, NULL, &err) == NULL);
    CHECK(err.code == KH_E_NOTFOUND);
    kh_err_clear(&err);

    unsigned before = state_events;
    kh_task *t = kh_lifecycle_action(mgr, "t1", KH_ACTION_START, NULL, &err);
    CHECK(t != NULL);
    CHECK_STR(state_of("t1"), "starting");
    /* A second start while the first runs: 409, not a second QEMU. */
    CHECK(kh_lifecycle_action(mgr, "t1", KH_ACTION_START, NULL, &err) == NULL);
    CHECK(err.code == KH_E_CONFLICT);
    kh_err_clear(&err);
    CHECK(wait_task(t) == KH_TASK_SUCCEEDED);
    CHECK_STR(state_of("t1"), "running");
    CHECK(state_events >= before + 2);
    CHECK(kh_config_delete(mgr, "t1", &err) < 0 && err.code == KH_E_CONFLICT);
    kh_err_clear(&err);

    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_PAUSE, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    CHECK_STR(state_of("t1"), "paused");
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_RESUME, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    CHECK_STR(state_of("t1"), "running");
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_REBOOT, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    CHECK_STR(state_of("t1"), "running");

    /* Stop with a 1 s grace: the firmware ignores ACPI, so it is killed. */
    json_t *opts = json_pack("{s:i}", "timeout", 1);
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_STOP, opts, &err);
    json_decref(opts);
    CHECK(t != NULL);
    CHECK_STR(state_of("t1"), "stopping");
    CHECK(wait_task(t) == KH_TASK_SUCCEEDED);
    CHECK_STR(state_of("t1"), "stopped");
    json_t *j = kh_manager_vm_json(mgr, "t1", &err);
    const char *reason = json_string_value(json_object_get(j, "state_reason"));
    CHECK(reason && strstr(reason, "timeout"));
    CHECK(json_is_null(json_object_get(j, "pid")));
    json_decref(j);

    opts = json_pack("{s:s}", "timeout", "soon");
    CHECK(kh_lifecycle_action(mgr, "t1", KH_ACTION_STOP, opts, &err) == NULL);
    CHECK(err.code == KH_E_INVALID);
    kh_err_clear(&err);
    json_decref(opts);
}

static void test_kill_and_restart(void)
{
    kh_err err = KH_ERR_INIT;
    kh_task *t = kh_lifecycle_action(mgr, "t1", KH_ACTION_START, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    json_t *j = kh_manager_vm_json(mgr, "t1", &err);
    json_int_t pid = json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    CHECK(pid > 0);

    /* The daemon goes away (the manager is dropped without touching QEMU)
     * and comes back: the same QEMU is adopted. */
    kh_manager_free(mgr);
    for (int i = 0; i < 20; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    CHECK(kill((pid_t)pid, 0) == 0);
    manager_open();
    for (int i = 0; i < 300 && !reason_has("t1", "reattached"); i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
    CHECK_STR(state_of("t1"), "running");
    j = kh_manager_vm_json(mgr, "t1", &err);
    CHECK(json_integer_value(json_object_get(j, "pid")) == pid);
    const char *reason = json_string_value(json_object_get(j, "state_reason"));
    CHECK(reason && strstr(reason, "reattached"));
    json_decref(j);

    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_KILL, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    CHECK_STR(state_of("t1"), "stopped");
    /* It was this test process's child: reap it, then it is gone. */
    CHECK(waitpid((pid_t)pid, NULL, 0) == (pid_t)pid);
    CHECK(kill((pid_t)pid, 0) < 0);

    /* Killed right after a restart, before QMP answered: the next start
     * must not be mistaken for the interrupted one. */
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_START, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    kh_manager_free(mgr);
    manager_open();
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_KILL, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_START, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    CHECK_STR(state_of("t1"), "running");
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_KILL, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;

    /* A QEMU that died while no daemon watched. */
    t = kh_lifecycle_action(mgr, "t1", KH_ACTION_START, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    j = kh_manager_vm_json(mgr, "t1", &err);
    pid = json_integer_value(json_object_get(j, "pid"));
    json_decref(j);
    CHECK(pid > 0);
    if (pid <= 0)
        return;
    kh_manager_free(mgr);
    for (int i = 0; i < 20; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    kill((pid_t)pid, SIGKILL);
    for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++) {
        waitpid((pid_t)pid, NULL, WNOHANG);
        usleep(10000);
    }
    manager_open();
    CHECK_STR(state_of("t1"), "stopped");
    j = kh_manager_vm_json(mgr, "t1", &err);
    reason = json_string_value(json_object_get(j, "state_reason"));
    CHECK(reason && strstr(reason, "while the daemon was down"));
    json_decref(j);
    CHECK(kh_config_delete(mgr, "t1", &err) == 0);
    CHECK(kh_manager_vm_json(mgr, "t1", &err) == NULL && err.code == KH_E_NOTFOUND);
}

static char *slurp(const char *d, const char *file)
{
    char *path = xasprintf("%s/%s", d, file);
    char *text = kh_fs_read(path, 4096, NULL, NULL);
    free(path);
    if (text)
        text[strcspn(text, "\n")] = '\0';
    return text;
}

/* A live limit change the store refuses is undone: the cgroup gets the old
 * values back and the spec stays. The cgroup is a tree of regular files in
 * the temp dir (switched in while the VM runs); the store write fails
 * through SQLite's query_only. */
static void test_patch_undo(void)
{
    kh_err err = KH_ERR_INIT;
    json_t *s = spec("t3");
    json_t *vm = kh_config_create(mgr, s, &err);
    json_decref(s);
    CHECK(vm != NULL);
    char id[37];
    snprintf(id, sizeof(id), "%s", vm ? json_string_value(json_object_get(vm, "id")) : "");
    json_decref(vm);
    kh_task *t = kh_lifecycle_action(mgr, "t3", KH_ACTION_START, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);

    no_cgroups.version = 2;
    kh_fmt(no_cgroups.mount, sizeof(no_cgroups.mount), "%s/cg", dir);
    kh_fmt(no_cgroups.root, sizeof(no_cgroups.root), "kvmhost");
    char cg[600];
    CHECK(kh_cgroups_vm_dir(&no_cgroups, id, NULL, cg, sizeof(cg)) == 0);
    CHECK(kh_fs_mkdir_p(cg, 0755, &err) == 0);
    const char *files[] = { "cpu.weight", "cpu.max", "memory.max" };
    for (size_t i = 0; i < KH_ARRAY_LEN(files); i++) {
        char *path = xasprintf("%s/%s", cg, files[i]);
        CHECK(kh_fs_write_atomic(path, "", 0, 0644, &err) == 0);
        free(path);
    }

    json_t *patch = json_pack("{s:{s:i}}", "limits", "cpu_max_percent", 20);
    json_t *j = kh_config_patch(mgr, "t3", patch, &err);
    json_decref(patch);
    CHECK(j != NULL);
    json_decref(j);
    char *text;
    CHECK_STR(text = slurp(cg, "cpu.max"), "20000 100000");
    free(text);

    sqlite3 *db = kh_store_sqlite(store);
    CHECK(sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL) == SQLITE_OK);
    patch = json_pack("{s:{s:i}}", "limits", "cpu_max_percent", 50);
    CHECK(kh_config_patch(mgr, "t3", patch, &err) == NULL);
    json_decref(patch);
    CHECK(err.code != KH_OK);
    kh_err_clear(&err);
    CHECK(sqlite3_exec(db, "PRAGMA query_only = 0", NULL, NULL, NULL) == SQLITE_OK);
    /* put back, and the spec kept its limits */
    CHECK_STR(text = slurp(cg, "cpu.max"), "20000 100000");
    free(text);
    j = kh_manager_vm_json(mgr, "t3", &err);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "limits"), "cpu_max_percent")) ==
          20);
    json_decref(j);

    memset(&no_cgroups, 0, sizeof(no_cgroups));
    t = kh_lifecycle_action(mgr, "t3", KH_ACTION_KILL, NULL, &err);
    CHECK(t && wait_task(t) == KH_TASK_SUCCEEDED);
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    CHECK(kh_config_delete(mgr, "t3", &err) == 0);
}

static void test_bad_disk(void)
{
    kh_err err = KH_ERR_INIT;
    json_t *s = json_pack("{s:s, s:i, s:i, s:[{s:s, s:s}]}", "name", "t2", "vcpus", 1,
                          "memory_mib", 64, "disks", "path", "/nonexistent/disk.img", "format",
                          "raw");
    CHECK(kh_config_create(mgr, s, &err) == NULL);
    CHECK(err.code == KH_E_INVALID);
    json_decref(s);
}

int main(void)
{
    kh_err err = KH_ERR_INIT;
    char *bin = kh_qemu_caps_probe(NULL, &cfg.caps, &err);
    if (!bin) {
        printf("1..0 # SKIP no QEMU: %s\n", err.msg);
        return 77;
    }
    if (!mkdtemp(dir))
        return 1;
    disk = xasprintf("%s/disk.img", dir);
    int fd = open(disk, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
    close(fd);
    char *db = xasprintf("%s/db", dir), *run = xasprintf("%s/run", dir);
    loop = uv_default_loop();
    store = kh_store_open(db, &err);
    events = kh_events_new();
    kh_events_subscribe(events, 0, count_state, NULL);
    tasks = kh_tasks_new(store, events);
    cfg.state_dir = dir;
    cfg.run_dir = run;
    cfg.qemu_binary = bin;
    cfg.accel = KH_ACCEL_TCG;
    cfg.cgroups = &no_cgroups;
    cfg.start_timeout_ms = 15000;
    manager_open();
    RUN(test_lifecycle);
    RUN(test_kill_and_restart);
    RUN(test_patch_undo);
    RUN(test_bad_disk);
    kh_manager_free(mgr);
    kh_fs_rm_rf(dir, NULL);
    free(bin);
    free(db);
    free(run);
    free(disk);
    TEST_DONE();
}
