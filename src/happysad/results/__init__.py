"""What a sweep shows and reports: metrics in plain numpy (`evaluation`), figures
(`plots`), the sweep's report (`report`), the console's lines (`console`), and
pictures annotated with their faces' labels (`annotate`)."""
