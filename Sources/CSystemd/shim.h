#ifndef GATEWAYD_CSYSTEMD_SHIM_H
#define GATEWAYD_CSYSTEMD_SHIM_H
#include <systemd/sd-daemon.h>
#endif
