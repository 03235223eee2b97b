//! NVMe/TCP target. Built by the nvmf-target issue; empty until then.
