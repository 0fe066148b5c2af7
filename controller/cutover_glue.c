/*
 * Drives the registry and DNS steps of an operation through the cutover
 * drivers. Called every tick while an operation sits in one of those steps;
 * each call either finds the epoch already applied, or starts one apply
 * (never two at once per service and driver), and records the outcome in
 * the service's run-time state, which the next tick turns into the
 * operation's inputs (registry_epoch, dns_epoch).
 *
 * Until the real drivers are wired in, a configured driver is reported as
 * applied with a warning, so that operations complete.
 */
#include <stdio.h>

#include "controller.h"

void mrd__cutover_drive(mrd_ctl *ctl, mrd__service *s, const mrd_op *op, mrd_op_action action,
                        uint64_t now)
{
    (void)ctl;
    (void)now;
    if (action == MRD_ACT_REGISTRY && s->registry_epoch < op->epoch) {
        s->registry_epoch = op->epoch;
        mrd_log(MRD_LOG_WARN, "registry driver not available; step skipped",
                MRD_S("service", s->name));
    }
    if (action == MRD_ACT_DNS && s->dns_epoch < op->epoch) {
        s->dns_epoch = op->epoch;
        mrd_log(MRD_LOG_WARN, "dns driver not available; step skipped", MRD_S("service", s->name));
    }
}
