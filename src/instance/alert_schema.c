/* alert_schema.c - the alert module's table: alert_config, the rules and
 * webhook set through the API (rows in instance/alert.c). Pure data,
 * compiled into the store library and registered in store/migrations.c. */
#include "store/migrations.h"

/* 9: one row (id 1). config: {"rules": [...], "webhook": {"url",
 * "timeout_seconds"} | null}, what the daemon applies at start; file_config:
 * the --alert-rules file's content (compact, sorted keys) when it was last
 * applied, so an unchanged file does not undo changes made through the API. */
const char kh_alert_schema_config[] =
    "CREATE TABLE IF NOT EXISTS alert_config ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  config TEXT NOT NULL,"
    "  file_config TEXT,"
    "  updated_at REAL NOT NULL"
    ");";
