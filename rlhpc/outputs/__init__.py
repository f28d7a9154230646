"""What a run shows and leaves: its printed report, and comparing and evaluating runs afterwards."""
