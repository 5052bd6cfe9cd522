module shipshape/floor

go 1.19
