"""The baseline PAM module for the benchmark: pam_python with one prompt and nothing else."""


def pam_sm_authenticate(pamh, flags, argv):
    pamh.conversation(pamh.Message(pamh.PAM_PROMPT_ECHO_OFF, "Verification code: "))
    return pamh.PAM_SUCCESS


def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_SUCCESS
