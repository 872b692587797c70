"""The seed's host suspend and resume flows (section 3, "Suspend Flow" and "Resume
Flow"), written once from the seed for every test that checks the order.

They are the expected values: written from the RFC, never read from
``mediatord.core.suspend``, so a reordered step table fails the tests.
"""

SUSPEND_FLOW = [
    "move_to_boot_pcpu",
    "system_state_suspend",
    "disable_watchdog",
    "pause_domains",
    "disable_nonboot_pcpus",
    "mask_irqs",
    "suspend_timer",
    "save_gic",
    "save_el2_context",
    "el3_system_suspend",
]
RESUME_FLOW = [
    "restore_el2_context",
    "system_state_resume",
    "restore_gic",
    "resume_timer",
    "unmask_irqs",
    "enable_nonboot_pcpus",
    "unpause_domains",
    "enable_watchdog",
    "system_state_active",
    "resume_hardware_domain",
]
