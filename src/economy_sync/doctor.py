def run_doctor(conn, out):
    return 0
