/* Unit tests of the controller's "nodes" section and peer sets
 * (controller/peers.c through mrd__ctl_config_load): a valid file gives each
 * member's peer set with the configured agent URLs, and every error names
 * its key path (unknown key, a member's node not listed, a region that
 * differs, a bad or CR/LF-carrying agent_url, a duplicate node). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller.h"
#include "meridian/error.h"

#define HEAD                                                                                       \
    "{\"name\":\"ctl\",\"region\":\"eu\",\"listen\":\"127.0.0.1:7001\",\"store\":\"dbname=x\","    \
    "\"tokens\":[{\"name\":\"ops\",\"token\":\"0123456789abcdef\",\"role\":\"operator\"}],"        \
    "\"regions\":[{\"name\":\"eu\",\"priority\":1},{\"name\":\"us\",\"priority\":2}],"             \
    "\"services\":[{\"name\":\"orders\",\"primary_region\":\"eu\",\"members\":["                   \
    "{\"name\":\"orders-eu\",\"node\":\"node-eu\",\"region\":\"eu\"},"                             \
    "{\"name\":\"orders-us\",\"node\":\"node-us\",\"region\":\"us\"}]}]"

/* Loads text as a controller configuration file; returns its code. */
static int load(const char *text, mrd_ctl *ctl, char *err, size_t errlen)
{
    char path[] = "/tmp/mrd-nodes-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    memset(ctl, 0, sizeof(*ctl));
    err[0] = '\0';
    int rc = mrd__ctl_config_load(ctl, path, err, errlen);
    unlink(path);
    return rc;
}

static void expect_error(const char *nodes, const char *want)
{
    char text[4096], err[512];
    mrd_ctl ctl;
    snprintf(text, sizeof(text), HEAD ",\"nodes\":%s}", nodes);
    cr_assert_eq(load(text, &ctl, err, sizeof(err)), MRD_ECONFIG, "%s accepted", nodes);
    cr_assert(strstr(err, want) != NULL, "%s: got \"%s\", want \"%s\"", nodes, err, want);
}

Test(nodes_config, peer_sets_carry_the_configured_agent_urls)
{
    char err[512];
    mrd_ctl ctl;
    const char *text = HEAD ",\"nodes\":[{\"name\":\"node-eu\",\"region\":\"eu\","
                            "\"agent_url\":\"http://127.0.0.1:7071\"},"
                            "{\"name\":\"node-us\",\"region\":\"us\"}]}";
    cr_assert_eq(load(text, &ctl, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ctl.nnodes, 2);
    cr_assert_str_eq(mrd__node_agent_url(&ctl, "node-eu"), "http://127.0.0.1:7071");
    cr_assert_null(mrd__node_agent_url(&ctl, "node-us")); /* none configured */
    cr_assert_null(mrd__node_agent_url(&ctl, "node-xx"));
    /* us's peer set: eu, with its URL; eu's: us, without one */
    json_t *p = mrd__peers_for(&ctl, "orders", "node-us");
    cr_assert_eq(json_array_size(p), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 0), "member")),
                     "orders-eu");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 0), "agent_url")),
                     "http://127.0.0.1:7071");
    p = mrd__peers_for(&ctl, "orders", "node-eu");
    cr_assert_eq(json_array_size(p), 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 0), "node")), "node-us");
    cr_assert(json_is_null(json_object_get(json_array_get(p, 0), "agent_url")));
    /* a node without a member gets every member; an unknown service nothing */
    cr_assert_eq(json_array_size(mrd__peers_for(&ctl, "orders", "node-xx")), 2);
    cr_assert_null(mrd__peers_for(&ctl, "billing", "node-eu"));
    mrd__ctl_config_free(&ctl);
}

Test(nodes_config, without_nodes_every_url_is_null)
{
    char err[512];
    mrd_ctl ctl;
    cr_assert_eq(load(HEAD "}", &ctl, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ctl.nodes_given, 0);
    json_t *p = mrd__peers_for(&ctl, "orders", "node-eu");
    cr_assert_eq(json_array_size(p), 1);
    cr_assert(json_is_null(json_object_get(json_array_get(p, 0), "agent_url")));
    mrd__ctl_config_free(&ctl);
}

Test(nodes_config, errors_name_the_key)
{
    expect_error("{}", "nodes: must be an array");
    expect_error("[{\"name\":\"node-eu\",\"region\":\"eu\",\"token\":\"t\"}]",
                 "nodes[0].token: unknown key");
    expect_error("[{\"name\":\"node-eu\"}]", "nodes[0].region");
    expect_error("[{\"name\":\"node-eu\",\"region\":\"eu\"}]",
                 "services[0].members[1].node: \"node-us\" is not one of nodes");
    expect_error(
        "[{\"name\":\"node-eu\",\"region\":\"eu\"},{\"name\":\"node-us\",\"region\":\"eu\"}]",
        "services[0].members[1].region: \"us\" differs from the region \"eu\" of node "
        "\"node-us\"");
    expect_error("[{\"name\":\"node-eu\",\"region\":\"eu\",\"agent_url\":\"ftp://x\"},"
                 "{\"name\":\"node-us\",\"region\":\"us\"}]",
                 "nodes[0].agent_url: must be an http:// or https:// URL");
    expect_error(
        "[{\"name\":\"node-eu\",\"region\":\"eu\","
        "\"agent_url\":\"http://x\\r\\nX-Evil: 1\"},{\"name\":\"node-us\",\"region\":\"us\"}]",
        "nodes[0].agent_url: must be an http:// or https:// URL without control");
    expect_error(
        "[{\"name\":\"node-eu\",\"region\":\"eu\"},{\"name\":\"node-eu\",\"region\":\"eu\"}]",
        "nodes[1].name: duplicate node \"node-eu\"");
}
