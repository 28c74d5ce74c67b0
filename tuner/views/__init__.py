"""What people look at: live progress, the HTML report, the dashboard's notes, deploy-best.sh."""
