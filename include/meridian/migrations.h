/*
 * The store schema's migrations, embedded at build time from sql/ (see
 * cmake/embed_sql.cmake), in version order. Applied by
 * controller/store_migrate.c, each in its own transaction, under an advisory
 * lock, and recorded in meridian.schema_migrations.
 */
#ifndef MERIDIAN_MIGRATIONS_H
#define MERIDIAN_MIGRATIONS_H

typedef struct {
    int version;
    const char *name;
    const char *sql;
} mrd_migration;

extern const mrd_migration mrd_migrations[];
extern const int mrd_migrations_count;

#endif
