/*
 * Small helpers of the controller with no better home: the monotonic clock.
 */
#include "controller.h"

uint64_t mrd__now_ms(void)
{
    return uv_hrtime() / 1000000u;
}
