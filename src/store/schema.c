/* schema.c - the store's own tables: vms and tasks (rows in store.c).
 * Registered in store/migrations.c. */
#include "store/migrations.h"

/* 1: VMs and tasks. Tasks name their VM and outlive it (the history of a
 * deleted VM's operations), so they have no foreign key. */
const char kh_store_schema_vms_tasks[] =
    "CREATE TABLE vms ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  spec TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'stopped',"
    "  state_reason TEXT,"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  pid_start INTEGER NOT NULL DEFAULT 0,"
    "  accel TEXT,"
    "  created_at REAL NOT NULL,"
    "  updated_at REAL NOT NULL,"
    "  started_at REAL NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE tasks ("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  vm_name TEXT,"
    "  state TEXT NOT NULL,"
    "  progress INTEGER NOT NULL DEFAULT 0,"
    "  message TEXT,"
    "  error_code TEXT,"
    "  error_message TEXT,"
    "  result TEXT,"
    "  created_at REAL NOT NULL,"
    "  finished_at REAL NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX tasks_created ON tasks(created_at);";
