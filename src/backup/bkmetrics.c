/* bkmetrics.c - owns the Prometheus figures of backups: per VM, counters of
 * the bytes committed backups read, wrote and deduplicated, the number of
 * backups, and the duration of the last one. They live in the daemon's
 * memory (a restart starts the counters again at 0, as Prometheus
 * expects of counters); each backup's own figures stay in its row. */
#include "backup/backup_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

static void add(json_t *o, const char *key, json_int_t v)
{
    json_object_set_new(o, key, json_integer(json_integer_value(json_object_get(o, key)) + v));
}

void kh_bkmetrics_record(kh_backups *b, const json_t *rec)
{
    const char *vm = json_string_value(json_object_get(rec, "vm"));
    const char *id = json_string_value(json_object_get(rec, "vm_id"));
    if (!vm || !id)
        return;
    if (!b->figures)
        b->figures = json_object();
    json_t *f = json_object_get(b->figures, id);
    if (!f) {
        f = json_object();
        json_object_set_new(b->figures, id, f);
    }
    json_object_set_new(f, "vm", json_string(vm));
    add(f, "read", json_integer_value(json_object_get(rec, "bytes_read")));
    add(f, "written", json_integer_value(json_object_get(rec, "bytes_written")));
    add(f, "dedup", json_integer_value(json_object_get(rec, "bytes_dedup")));
    add(f, "count", 1);
    json_object_set_new(f, "duration_ms", json_integer(json_integer_value(
                                              json_object_get(rec, "duration_ms"))));
}

typedef struct family {
    const char *name, *type, *help, *key;
    double scale;
} family;

static const family families[] = {
    { "kvmhost_backup_bytes_read_total", "counter", "Bytes backups read from the VM's disks.",
      "read", 1 },
    { "kvmhost_backup_bytes_written_total", "counter",
      "Bytes backups wrote to the store (new chunks, compressed).", "written", 1 },
    { "kvmhost_backup_bytes_deduplicated_total", "counter",
      "Bytes of pieces backups found already in the store.", "dedup", 1 },
    { "kvmhost_backups_total", "counter", "Backups committed.", "count", 1 },
    { "kvmhost_backup_duration_seconds", "gauge", "Duration of the VM's last backup.",
      "duration_ms", 0.001 },
};

char *kh_bkmetrics_render(const kh_backups *b, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) {
        *len = 0;
        return xstrdup("");
    }
    for (size_t k = 0; k < sizeof(families) / sizeof(families[0]); k++) {
        const family *fa = &families[k];
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fa->name, fa->help, fa->name, fa->type);
        const char *id;
        json_t *v;
        json_object_foreach(b ? b->figures : NULL, id, v) {
            /* vm names and ids are checked names (no quote, no backslash) */
            json_int_t x = json_integer_value(json_object_get(v, fa->key));
            if (fa->scale == 1)
                fprintf(f, "%s{vm=\"%s\",id=\"%s\"} %lld\n", fa->name,
                        json_string_value(json_object_get(v, "vm")), id, (long long)x);
            else
                fprintf(f, "%s{vm=\"%s\",id=\"%s\"} %.3f\n", fa->name,
                        json_string_value(json_object_get(v, "vm")), id, (double)x * fa->scale);
        }
    }
    fclose(f);
    *len = n;
    return buf;
}
