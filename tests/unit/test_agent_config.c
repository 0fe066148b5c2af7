/* Unit tests of the agent's configuration: defaults, every section loaded,
 * and errors that name the key path (schema errors and cross-checks). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "meridian/error.h"

#define BASE                                                                                       \
    "\"node\":\"db-eu-1\",\"region\":\"eu\",\"controllers\":[\"http://127.0.0.1:1\","              \
    "\"http://127.0.0.1:2\"],\"token\":\"t\",\"state_dir\":\"/tmp\""

static int load(const char *text, mrd__agent_config *cfg, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    cr_assert_not_null(j, "test JSON: %s", jerr.text);
    int rc = mrd__agent_config_from_json(cfg, j, err, errlen);
    json_decref(j);
    return rc;
}

Test(agent_config, minimal_takes_defaults)
{
    mrd__agent_config cfg;
    char err[256];
    cr_assert_eq(load("{" BASE "}", &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cfg.node, "db-eu-1");
    cr_assert_eq(cfg.ncontrollers, 2);
    cr_assert_str_eq(cfg.controllers[1], "http://127.0.0.1:2");
    cr_assert_null(cfg.controllers[2]);
    cr_assert_eq(cfg.heartbeat_ms, 1000);
    cr_assert_eq(cfg.isolation_timeout_ms, 4000);
    cr_assert_eq(cfg.request_timeout_ms, 2000);
    cr_assert_eq(cfg.listen_port, -1);
    cr_assert_eq(cfg.nmembers + cfg.nchecks + cfg.nprobes + cfg.npeers, 0);
    mrd__agent_config_free(&cfg);
}

Test(agent_config, full)
{
    mrd__agent_config cfg;
    char err[256];
    const char *text =
        "{" BASE ",\"heartbeat_ms\":250,\"isolation_timeout_ms\":1500,"
        "\"listen\":\"127.0.0.1:7070\","
        "\"peer_tokens\":[{\"name\":\"p\",\"token\":\"x\",\"role\":\"agent\"}],"
        "\"peers\":[{\"name\":\"db-us-1\",\"url\":\"http://127.0.0.1:7071\",\"token\":\"y\","
        "\"services\":[\"orders\"]}],\"peer_token\":\"z\","
        "\"members\":[{\"service\":\"orders\",\"name\":\"orders-eu-1\",\"kind\":\"postgresql\","
        "\"conninfo\":\"host=x\",\"rejoin_command\":[\"/bin/hook\",\"-v\"],"
        "\"fence\":{\"mode\":\"stop\",\"command\":[\"/bin/stop\"]}},"
        "{\"service\":\"cache\",\"name\":\"cache-eu-1\",\"kind\":\"exec\","
        "\"status_command\":[\"/bin/st\"],\"promote_command\":[\"/bin/pr\"],"
        "\"fence\":{\"mode\":\"exec\",\"command\":[\"/bin/f\"]}}],"
        "\"checks\":[{\"name\":\"pg\",\"kind\":\"postgresql\",\"conninfo\":\"host=x\","
        "\"member\":\"orders-eu-1\",\"weight\":\"warning\"},"
        "{\"name\":\"web\",\"kind\":\"http\",\"url\":\"http://127.0.0.1:80/h\"},"
        "{\"name\":\"port\",\"kind\":\"tcp\",\"target\":\"127.0.0.1:5432\"},"
        "{\"name\":\"sh\",\"kind\":\"exec\",\"command\":[\"/bin/true\"],\"interval_ms\":5000,"
        "\"timeout_ms\":3000}],"
        "\"probes\":[{\"region\":\"us\",\"kind\":\"tcp\",\"target\":\"[::1]:5432\"}]}";
    cr_assert_eq(load(text, &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.heartbeat_ms, 250);
    cr_assert_eq(cfg.request_timeout_ms, 500);
    cr_assert_str_eq(cfg.listen_host, "127.0.0.1");
    cr_assert_eq(cfg.listen_port, 7070);
    cr_assert_eq(cfg.npeers, 1);
    cr_assert_str_eq(cfg.peers[0].services[0], "orders");
    cr_assert_str_eq(cfg.peer_token, "z");
    cr_assert_eq(cfg.nmembers, 2);
    cr_assert_eq(cfg.members[0].fence_mode, MRD__FENCE_STOP);
    cr_assert_str_eq(cfg.members[0].fence_cmd[0], "/bin/stop");
    cr_assert_str_eq(cfg.members[0].rejoin_cmd[1], "-v");
    cr_assert_eq(cfg.members[0].promote_timeout_ms, 30000);
    cr_assert_eq(cfg.members[1].fence_mode, MRD__FENCE_EXEC);
    cr_assert_eq(cfg.nchecks, 4);
    cr_assert_eq(cfg.checks[0].kind, MRD__CHECK_PG);
    cr_assert_eq(cfg.checks[0].critical, 0);
    cr_assert_str_eq(cfg.checks[0].query, "SELECT 1");
    cr_assert_eq(cfg.checks[1].critical, 1);
    cr_assert_eq(cfg.checks[2].port, 5432);
    cr_assert_eq(cfg.checks[3].timeout_ms, 3000);
    cr_assert_eq(cfg.nprobes, 1);
    cr_assert_str_eq(cfg.probes[0].name, "us");
    cr_assert_eq(cfg.probes[0].port, 5432);
    mrd__agent_config_free(&cfg);
}

Test(agent_config, postgresql_probe)
{
    mrd__agent_config cfg;
    char err[256];
    const char *text =
        "{" BASE ",\"probes\":["
        "{\"region\":\"us\",\"kind\":\"postgresql\",\"target\":\"host=10.0.0.2 port=5433 "
        "user=meridian password=s3cret dbname=postgres sslmode=require\",\"timeout_ms\":700},"
        "{\"region\":\"ap\",\"kind\":\"postgresql\",\"query\":\"SELECT 2\","
        "\"target\":\"postgresql://probe:pw@10.0.0.3:5434/app\"},"
        "{\"region\":\"sa\",\"kind\":\"postgresql\",\"target\":\"sslmode=disable\"}]}";
    cr_assert_eq(load(text, &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.nprobes, 3);
    cr_assert_eq(cfg.probes[0].kind, MRD__CHECK_PG);
    cr_assert_str_eq(cfg.probes[0].name, "us");
    cr_assert_str_eq(cfg.probes[0].conninfo, "host=10.0.0.2 port=5433 user=meridian "
                                             "password=s3cret dbname=postgres sslmode=require");
    cr_assert_eq(cfg.probes[0].timeout_ms, 700);
    cr_assert_eq(cfg.probes[0].interval_ms, 1000);
    cr_assert_str_eq(cfg.probes[0].query, "SELECT 1");
    /* what heartbeats report: never the password, nor the other options */
    cr_assert_str_eq(cfg.probes[0].shown_target,
                     "host=10.0.0.2 port=5433 dbname=postgres user=meridian");
    cr_assert_str_eq(cfg.probes[1].query, "SELECT 2");
    cr_assert_str_eq(cfg.probes[1].shown_target, "host=10.0.0.3 port=5434 dbname=app user=probe");
    cr_assert_null(strstr(cfg.probes[1].shown_target, "pw"));
    cr_assert_str_eq(cfg.probes[2].shown_target, "libpq defaults");
    mrd__agent_config_free(&cfg);
}

static void expect_error(const char *body, const char *prefix)
{
    mrd__agent_config cfg;
    char err[256] = "";
    char text[2048];
    snprintf(text, sizeof(text), "{%s}", body);
    int rc = load(text, &cfg, err, sizeof(err));
    cr_assert_neq(rc, 0, "accepted: %s", text);
    cr_assert_eq(strncmp(err, prefix, strlen(prefix)), 0, "error '%s' does not start with '%s'",
                 err, prefix);
    cr_assert_null(cfg.root, "nothing kept on failure");
}

#define MEMBER_PG "{\"service\":\"s\",\"name\":\"m\",\"kind\":\"postgresql\",\"conninfo\":\"c\"}"

Test(agent_config, errors_name_the_key)
{
    expect_error("\"region\":\"eu\",\"controllers\":[\"http://x:1\"],\"token\":\"t\","
                 "\"state_dir\":\"/tmp\"",
                 "node");
    expect_error(BASE ",\"heartbeat_ms\":\"fast\"", "heartbeat_ms");
    expect_error(BASE ",\"heartbeat_ms\":3000", "isolation_timeout_ms: must be at least twice");
    expect_error(BASE ",\"request_timeout_ms\":5000", "request_timeout_ms: must be below");
    expect_error(BASE ",\"typo_key\":1", "typo_key");
    expect_error(BASE ",\"listen\":\"nohost\"", "listen: must be host:port");
    expect_error(BASE ",\"listen\":\"127.0.0.1:7070\"", "peer_tokens: at least one");
    expect_error("\"node\":\"n\",\"region\":\"r\",\"controllers\":[\"ftp://x\"],\"token\":\"t\","
                 "\"state_dir\":\"/tmp\"",
                 "controllers[0]: must be an http");
    expect_error(BASE ",\"peers\":[{\"name\":\"p\",\"url\":\"x\",\"token\":\"t\"}]",
                 "peers[0].url");
    expect_error(BASE ",\"members\":[{\"service\":\"s\",\"name\":\"m\",\"kind\":\"postgresql\"}]",
                 "members[0].conninfo: is required");
    expect_error(BASE ",\"members\":[{\"service\":\"s\",\"name\":\"m\",\"kind\":\"mysql\","
                      "\"conninfo\":\"c\"}]",
                 "members[0].kind");
    expect_error(BASE ",\"members\":[{\"service\":\"s\",\"name\":\"m\",\"kind\":\"postgresql\","
                      "\"conninfo\":\"c\",\"fence\":{\"mode\":\"stop\"}}]",
                 "members[0].fence.command: is required");
    expect_error(BASE ",\"members\":[" MEMBER_PG "," MEMBER_PG "]",
                 "members[1].name: duplicate member m");
    expect_error(BASE ",\"members\":[{\"service\":\"s\",\"name\":\"e\",\"kind\":\"exec\","
                      "\"promote_command\":[\"/p\"],\"fence\":{\"mode\":\"exec\","
                      "\"command\":[\"/f\"]}}]",
                 "members[0].status_command: is required");
    expect_error(BASE ",\"checks\":[{\"name\":\"c\",\"kind\":\"tcp\",\"target\":\"x\"}]",
                 "checks[0].target: must be host:port");
    expect_error(BASE ",\"checks\":[{\"name\":\"c\",\"kind\":\"exec\"}]",
                 "checks[0].command: is required");
    expect_error(BASE ",\"checks\":[{\"name\":\"c\",\"kind\":\"http\",\"url\":\"http://x:1/\","
                      "\"member\":\"nobody\"}]",
                 "checks[0].member: no member named nobody");
    expect_error(BASE ",\"checks\":[{\"name\":\"c\",\"kind\":\"http\",\"url\":\"http://x:1/\","
                      "\"interval_ms\":1000,\"timeout_ms\":2000}]",
                 "checks[0].timeout_ms: must not exceed interval_ms");
    expect_error(BASE ",\"probes\":[{\"region\":\"us\",\"kind\":\"exec\",\"target\":\"x\"}]",
                 "probes[0].kind");
    expect_error(BASE ",\"probes\":[{\"region\":\"us\",\"kind\":\"postgresql\","
                      "\"target\":\"host=x port\"}]",
                 "probes[0].target: must be a libpq conninfo or URI");
    expect_error(BASE ",\"probes\":[{\"region\":\"us\",\"kind\":\"postgresql\"}]",
                 "probes[0].target");
    expect_error(BASE ",\"probes\":[{\"region\":\"us\",\"kind\":\"postgresql\","
                      "\"target\":\"host=x\",\"conninfo\":\"host=y\"}]",
                 "probes[0].conninfo");
}

Test(agent_config, shipped_example_loads)
{
    char path[1024], err[512];
    const char *here = __FILE__; /* .../tests/unit/test_agent_config.c */
    const char *cut = strstr(here, "tests/unit/");
    cr_assert_not_null(cut);
    snprintf(path, sizeof(path), "%.*sdeploy/agent.example.json", (int)(cut - here), here);
    mrd__agent_config cfg;
    cr_assert_eq(mrd__agent_config_load(&cfg, path, err, sizeof(err)), 0, "%s: %s", path, err);
    cr_assert_eq(cfg.nmembers, 1);
    cr_assert_eq(cfg.members[0].fence_mode, MRD__FENCE_DEMOTE);
    cr_assert_eq(cfg.members[0].fence_timeout_ms, 5000);
    cr_assert_eq(cfg.nprobes, 1);
    cr_assert_eq(cfg.probes[0].kind, MRD__CHECK_PG, "the example probes at the application level");
    mrd__agent_config_free(&cfg);
}

Test(agent_config, fence_demote_is_the_postgresql_default)
{
    mrd__agent_config cfg;
    char err[256];
    cr_assert_eq(load("{" BASE ",\"members\":[" MEMBER_PG "]}", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(cfg.members[0].fence_mode, MRD__FENCE_DEMOTE);
    cr_assert_eq(cfg.members[0].fence_timeout_ms, 5000);
    cr_assert_null(cfg.members[0].pg_bindir);
    mrd__agent_config_free(&cfg);
    cr_assert_eq(load("{" BASE ",\"members\":[{\"service\":\"s\",\"name\":\"m\","
                      "\"kind\":\"postgresql\",\"conninfo\":\"c\",\"data_dir\":\"/d\","
                      "\"pg_bindir\":\"/usr/lib/postgresql/15/bin\",\"fence\":{\"mode\":"
                      "\"demote\",\"timeout_ms\":1500}}]}",
                      &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(cfg.members[0].fence_mode, MRD__FENCE_DEMOTE);
    cr_assert_eq(cfg.members[0].fence_timeout_ms, 1500);
    cr_assert_str_eq(cfg.members[0].pg_bindir, "/usr/lib/postgresql/15/bin");
    mrd__agent_config_free(&cfg);
    cr_assert_eq(load("{" BASE ",\"members\":[{\"service\":\"s\",\"name\":\"m\","
                      "\"kind\":\"postgresql\",\"conninfo\":\"c\",\"fence\":{\"mode\":"
                      "\"read_only\"}}]}",
                      &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(cfg.members[0].fence_mode, MRD__FENCE_READ_ONLY);
    mrd__agent_config_free(&cfg);
}

Test(agent_config, fence_demote_errors)
{
    expect_error(BASE ",\"members\":[{\"service\":\"s\",\"name\":\"e\",\"kind\":\"exec\","
                      "\"status_command\":[\"/s\"],\"promote_command\":[\"/p\"],"
                      "\"fence\":{\"mode\":\"demote\"}}]",
                 "members[0].fence.mode: demote needs a postgresql member");
    expect_error(BASE ",\"members\":[{\"service\":\"s\",\"name\":\"m\","
                      "\"kind\":\"postgresql\",\"conninfo\":\"c\",\"fence\":{\"mode\":"
                      "\"demote\",\"timeout_ms\":50}}]",
                 "members[0].fence.timeout_ms");
    expect_error(BASE ",\"members\":[{\"service\":\"s\",\"name\":\"m\","
                      "\"kind\":\"postgresql\",\"conninfo\":\"c\",\"fence\":{\"mode\":"
                      "\"kill\"}}]",
                 "members[0].fence.mode");
}
