/* Unit test: every agent command the operation state machine can emit has a
 * name the agent protocol knows (so an agent can parse and dispatch it), and
 * the table the controller checks at start is well-formed. */
#include <criterion/criterion.h>

#include "meridian/opfsm.h"
#include "meridian/protocol.h"

Test(commands, every_fsm_command_is_an_agent_command)
{
    cr_assert_gt(mrd_opfsm_agent_commands_len, 0);
    for (size_t i = 0; i < mrd_opfsm_agent_commands_len; i++) {
        const char *name = mrd_op_action_name(mrd_opfsm_agent_commands[i]);
        mrd_cmd_kind kind;
        cr_assert_eq(mrd_cmd_kind_parse(name, &kind), 0, "agent has no command %s", name);
        cr_assert_str_eq(mrd_cmd_kind_name(kind), name);
    }
}

Test(commands, the_table_checks_itself)
{
    char err[256] = "";
    cr_assert_eq(mrd_opfsm_check(err, sizeof(err)), 0, "%s", err);
}
